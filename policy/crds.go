package policy

import (
	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	flaggerv1beta1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The CRDs whose projects publish Go types this module can build with.
func init() {
	goTypes["monitoring.coreos.com/v1/ServiceMonitor"] = func() any { return &monitoringv1.ServiceMonitor{} }
	goTypes["monitoring.coreos.com/v1/PrometheusRule"] = func() any { return &monitoringv1.PrometheusRule{} }
	goTypes["cert-manager.io/v1/Certificate"] = func() any { return &certmanagerv1.Certificate{} }
	goTypes["cert-manager.io/v1/Issuer"] = func() any { return &certmanagerv1.Issuer{} }
	goTypes["cert-manager.io/v1/ClusterIssuer"] = func() any { return &certmanagerv1.ClusterIssuer{} }
	goTypes["flagger.app/v1beta1/Canary"] = func() any { return &flaggerv1beta1.Canary{} }
	goTypes["flagger.app/v1beta1/MetricTemplate"] = func() any { return &flaggerv1beta1.MetricTemplate{} }
	goTypes["flagger.app/v1beta1/AlertProvider"] = func() any { return &flaggerv1beta1.AlertProvider{} }
	// The preview's Gateway for the canaries (infra/overlays/preview/canary).
	goTypes["gateway.networking.k8s.io/v1/Gateway"] = func() any { return &gatewayv1.Gateway{} }
	goTypes["gateway.networking.k8s.io/v1/BackendTLSPolicy"] = func() any { return &gatewayv1.BackendTLSPolicy{} }
}

package policy

import (
	flaggerv1beta1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

// The CRDs whose projects publish Go types this module can build with.
func init() {
	goTypes["monitoring.coreos.com/v1/ServiceMonitor"] = func() any { return &monitoringv1.ServiceMonitor{} }
	goTypes["monitoring.coreos.com/v1/PrometheusRule"] = func() any { return &monitoringv1.PrometheusRule{} }
	goTypes["flagger.app/v1beta1/Canary"] = func() any { return &flaggerv1beta1.Canary{} }
	goTypes["flagger.app/v1beta1/MetricTemplate"] = func() any { return &flaggerv1beta1.MetricTemplate{} }
	goTypes["flagger.app/v1beta1/AlertProvider"] = func() any { return &flaggerv1beta1.AlertProvider{} }
}

package policy

import (
	"fmt"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// goTypes maps apiVersion + kind to a constructor of the Go type that
// object must decode into. Extended by the CRD types in crds.go.
var goTypes = map[string]func() any{
	"v1/Namespace":                                    func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount":                               func() any { return &corev1.ServiceAccount{} },
	"v1/Service":                                      func() any { return &corev1.Service{} },
	"v1/ConfigMap":                                    func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                       func() any { return &corev1.Secret{} },
	"apps/v1/Deployment":                              func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                             func() any { return &appsv1.StatefulSet{} },
	"apps/v1/DaemonSet":                               func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":                                    func() any { return &batchv1.Job{} },
	"batch/v1/CronJob":                                func() any { return &batchv1.CronJob{} },
	"networking.k8s.io/v1/NetworkPolicy":              func() any { return &networkingv1.NetworkPolicy{} },
	"autoscaling/v2/HorizontalPodAutoscaler":          func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":                   func() any { return &policyv1.PodDisruptionBudget{} },
	"rbac.authorization.k8s.io/v1/Role":               func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding":        func() any { return &rbacv1.RoleBinding{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
	"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy":        func() any { return &admissionv1.ValidatingAdmissionPolicy{} },
	"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding": func() any { return &admissionv1.ValidatingAdmissionPolicyBinding{} },
}

// validators are checks a kind's CRD makes that decoding cannot (patterns,
// required fields): run after a strict decode (litmus.go).
var validators = map[string]func(any) error{}

// Typed decodes o strictly into its Go type. ok is false when no Go type
// is known for its kind (see Structural for those).
func Typed(o Object) (v any, ok bool, err error) {
	newT, ok := goTypes[o.APIVersion+"/"+o.Kind]
	if !ok {
		return nil, false, nil
	}
	v = newT()
	if err := Decode(o, v); err != nil {
		return v, true, err
	}
	if check, ok := validators[o.APIVersion+"/"+o.Kind]; ok {
		if err := check(v); err != nil {
			return v, true, fmt.Errorf("%s: %w", o.ID(), err)
		}
	}
	return v, true, nil
}

// DecodeAll decodes every object: typed ones strictly; the rest must be
// one of the structurally checked kinds, and pass that check.
func DecodeAll(objs []Object) (typed map[string]any, structural []Object, err error) {
	typed = map[string]any{}
	for _, o := range objs {
		v, ok, err := Typed(o)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			typed[o.ID()] = v
			continue
		}
		if err := CheckStructural(o); err != nil {
			return nil, nil, err
		}
		structural = append(structural, o)
	}
	return typed, structural, nil
}

// CheckStructural is the check for kinds with no Go type available here.
func CheckStructural(o Object) error {
	check, ok := structuralKinds[o.APIVersion+"/"+o.Kind]
	if !ok {
		return fmt.Errorf("%s: no Go type and no structural check for %s %s; add one to policy", o.ID(), o.APIVersion, o.Kind)
	}
	return check(o)
}

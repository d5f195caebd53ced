package deploy

import (
	"fmt"
	"sort"

	"github.com/darktower/delivery/pipelines/devsecrets"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// externalSecret is the part of an external-secrets.io ExternalSecret the
// deploy stage realizes.
type externalSecret struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Target struct {
			Name     string `json:"name"`
			Template *struct {
				Type string `json:"type"`
			} `json:"template"`
		} `json:"target"`
		Data []struct {
			SecretKey string `json:"secretKey"`
			RemoteRef struct {
				Key      string `json:"key"`
				Property string `json:"property"`
			} `json:"remoteRef"`
		} `json:"data"`
	} `json:"spec"`
}

// RealizeExternalSecrets does what external-secrets' operator does with the
// local ClusterSecretStore, where the operator is not installed: each
// ExternalSecret's target Secret, in its namespace, from the local secrets
// (dev-secrets: remote key → properties). A reference to a key or property
// that does not exist is an error naming the ExternalSecret.
func RealizeExternalSecrets(objs []*unstructured.Unstructured, local []devsecrets.Secret) ([]*corev1.Secret, error) {
	store := map[string]map[string]string{}
	for _, s := range local {
		store[s.Metadata.Name] = s.StringData
	}
	var out []*corev1.Secret
	for _, o := range objs {
		if o.GetKind() != "ExternalSecret" {
			continue
		}
		var es externalSecret
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &es); err != nil {
			return nil, fmt.Errorf("ExternalSecret %s/%s: %w", o.GetNamespace(), o.GetName(), err)
		}
		name := es.Spec.Target.Name
		if name == "" {
			name = es.Metadata.Name
		}
		s := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: o.GetNamespace(),
				Labels: map[string]string{"app.kubernetes.io/part-of": "dark-tower", "app.kubernetes.io/managed-by": "darktower-deploy"}},
			Type: corev1.SecretTypeOpaque, StringData: map[string]string{}}
		if t := es.Spec.Target.Template; t != nil && t.Type != "" {
			s.Type = corev1.SecretType(t.Type)
		}
		for _, d := range es.Spec.Data {
			props, ok := store[d.RemoteRef.Key]
			if !ok {
				return nil, fmt.Errorf("ExternalSecret %s/%s reads %q, which the local secrets do not have (%s)", o.GetNamespace(), o.GetName(), d.RemoteRef.Key, keys(store))
			}
			v, ok := props[d.RemoteRef.Property]
			if !ok {
				return nil, fmt.Errorf("ExternalSecret %s/%s reads %s.%s, which does not exist", o.GetNamespace(), o.GetName(), d.RemoteRef.Key, d.RemoteRef.Property)
			}
			s.StringData[d.SecretKey] = v
		}
		out = append(out, s)
	}
	return out, nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

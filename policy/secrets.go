package policy

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// externalSecret is the part of an ExternalSecret this check reads.
type externalSecret struct {
	Metadata struct{ Name, Namespace string }
	Spec     struct {
		Target struct{ Name string }
		Data   []struct {
			SecretKey string `json:"secretKey"`
		}
	}
}

// SecretRefs lists every "secret/key" (or "secret/*" for a whole mounted
// secret) the pod specs reference.
func SecretRefs(specs []corev1.PodSpec) []string {
	set := map[string]bool{}
	for _, spec := range specs {
		for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					set[e.ValueFrom.SecretKeyRef.Name+"/"+e.ValueFrom.SecretKeyRef.Key] = true
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.Secret != nil {
				set[v.Secret.SecretName+"/*"] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CheckSecretsProvided reports every referenced secret (and key) that no
// ExternalSecret of the same rendering produces: a pod that would never
// start for want of a secret.
func CheckSecretsProvided(r *Rendered, refs []string) ([]string, error) {
	provided := map[string]bool{}
	for _, o := range r.Structural {
		if o.Kind != "ExternalSecret" {
			continue
		}
		var es externalSecret
		if err := yaml.Unmarshal(o.YAML, &es); err != nil {
			return nil, fmt.Errorf("%s: %w", o.ID(), err)
		}
		provided[es.Spec.Target.Name+"/*"] = true
		for _, d := range es.Spec.Data {
			provided[es.Spec.Target.Name+"/"+d.SecretKey] = true
		}
	}
	var missing []string
	for _, ref := range refs {
		if !provided[ref] {
			missing = append(missing, ref)
		}
	}
	return missing, nil
}

package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// shape is a structural check for a CRD with no Go type available here
// (its project publishes none this module can build with): the fields
// that must be present, and the spec fields allowed at the top level, so
// a typo or a field from another version still fails.
type shape struct {
	required    []string // dotted paths that must exist, e.g. spec.instances
	specAllowed []string // every allowed key directly under spec
}

var structuralKinds = map[string]func(Object) error{}

func registerShape(apiVersionKind string, s shape) {
	structuralKinds[apiVersionKind] = func(o Object) error { return s.check(o) }
}

func (s shape) check(o Object) error {
	var m map[string]any
	if err := yaml.Unmarshal(o.YAML, &m); err != nil {
		return fmt.Errorf("%s: %w", o.ID(), err)
	}
	for _, path := range s.required {
		if _, ok := Lookup(m, path); !ok {
			return fmt.Errorf("%s: required field %s is missing", o.ID(), path)
		}
	}
	for k := range m {
		switch k {
		case "apiVersion", "kind", "metadata", "spec":
		default:
			return fmt.Errorf("%s: unknown top-level field %q", o.ID(), k)
		}
	}
	if spec, ok := m["spec"].(map[string]any); ok && s.specAllowed != nil {
		var unknown []string
		for k := range spec {
			if !slices.Contains(s.specAllowed, k) {
				unknown = append(unknown, k)
			}
		}
		sort.Strings(unknown)
		if len(unknown) > 0 {
			return fmt.Errorf("%s: unknown spec field(s) %s", o.ID(), strings.Join(unknown, ", "))
		}
	}
	return nil
}

// Lookup follows a dotted path (numeric parts index lists) through a
// decoded YAML document.
func Lookup(doc any, path string) (any, bool) {
	cur := doc
	for _, part := range strings.Split(path, ".") {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[part]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			var i int
			if _, err := fmt.Sscanf(part, "%d", &i); err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

package flags

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Type is a flag's value type.
type Type int

// The types a flag can have (infra/flags/catalog.yaml's type field).
const (
	TypeBool Type = iota + 1
	TypeInt
	TypeFloat
	TypeString
)

func (t Type) String() string {
	switch t {
	case TypeBool:
		return "bool"
	case TypeInt:
		return "int"
	case TypeFloat:
		return "float"
	case TypeString:
		return "string"
	}
	return "unknown"
}

// Spec is one flag as the catalogue defines it (catalog_gen.go): its type,
// static default (the third tier of the fallback) and the rules a value
// must meet. Values travel as their canonical text, as stored in etcd.
type Spec struct {
	Type    Type
	Default string
	Owner   string
	Allowed []string
	HasMin  bool
	Min     float64
	HasMax  bool
	Max     float64
}

// Value is a parsed flag value.
type Value struct {
	Type Type
	Raw  string
	B    bool
	I    int64
	F    float64
}

// Parse checks raw against the spec: a value of another type or outside
// the allowed values or bounds is an error saying what was expected.
func (s Spec) Parse(raw string) (Value, error) {
	v := Value{Type: s.Type, Raw: raw}
	var err error
	switch s.Type {
	case TypeBool:
		switch raw {
		case "true":
			v.B = true
		case "false":
		default:
			return v, fmt.Errorf("%q is not a bool (true or false)", raw)
		}
	case TypeInt:
		if v.I, err = strconv.ParseInt(raw, 10, 64); err != nil {
			return v, fmt.Errorf("%q is not an int", raw)
		}
		v.F = float64(v.I)
	case TypeFloat:
		if v.F, err = strconv.ParseFloat(raw, 64); err != nil || math.IsNaN(v.F) || math.IsInf(v.F, 0) {
			return v, fmt.Errorf("%q is not a finite float", raw)
		}
	case TypeString:
		if raw == "" {
			return v, fmt.Errorf("an empty string is not a value")
		}
	default:
		return v, fmt.Errorf("unknown type")
	}
	if len(s.Allowed) > 0 {
		ok := false
		for _, a := range s.Allowed {
			ok = ok || a == raw
		}
		if !ok {
			return v, fmt.Errorf("%q is not one of the allowed values (%s)", raw, strings.Join(s.Allowed, ", "))
		}
	}
	if s.Type == TypeInt || s.Type == TypeFloat {
		if s.HasMin && v.F < s.Min {
			return v, fmt.Errorf("%s is below the minimum %v", raw, s.Min)
		}
		if s.HasMax && v.F > s.Max {
			return v, fmt.Errorf("%s is above the maximum %v", raw, s.Max)
		}
	}
	return v, nil
}

// Catalog returns a copy of the compiled catalogue (name → spec).
func Catalog() map[string]Spec {
	m := make(map[string]Spec, len(catalog))
	for k, v := range catalog {
		m[k] = v
	}
	return m
}

// Package flags is the feature-flag catalogue (infra/flags/catalog.yaml,
// docs/operations/feature-flags.md): strict parsing, the sync that applies
// it to etcd, and the generator of the services' static defaults
// (services/internal/flags/catalog_gen.go).
package flags

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// CatalogPath is the catalogue's place in the repository.
const CatalogPath = "infra/flags/catalog.yaml"

// Type is a flag's value type.
type Type string

// The types a flag can have.
const (
	Bool   Type = "bool"
	Int    Type = "int"
	Float  Type = "float"
	String Type = "string"
)

// Flag is one catalogue entry. Values are kept in their canonical text
// form, the form stored in etcd (what `etcdctl put` writes by hand).
type Flag struct {
	Name        string
	Type        Type
	Default     string
	Owner       string
	Description string
	Allowed     []string          // canonical values; empty: any value of the type (within Min/Max)
	Min, Max    *float64          // numbers only
	RemoveBy    string            // YYYY-MM-DD, release flags
	Values      map[string]string // environment → canonical value
	Line        int               // where the entry starts in the file
}

// Catalog is the parsed file.
type Catalog struct {
	File  string
	Flags []Flag
}

// Owners maps a flag name's first segment to the owner it must name: the
// rule `<service>.<area>.<name>` makes the owner readable from the name.
var Owners = map[string]string{
	"ac":       "ac-service",
	"gc":       "global-controller",
	"mc":       "meeting-controller",
	"mh":       "media-handler",
	"platform": "operations",
}

var (
	namePattern = regexp.MustCompile(`^[a-z][a-z0-9]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$`)
	envPattern  = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
)

// rawFlag is the YAML shape; KnownFields rejects anything else.
type rawFlag struct {
	Name        string               `yaml:"name"`
	Type        string               `yaml:"type"`
	Default     yaml.Node            `yaml:"default"`
	Owner       string               `yaml:"owner"`
	Description string               `yaml:"description"`
	Allowed     []yaml.Node          `yaml:"allowed"`
	Min         yaml.Node            `yaml:"min"`
	Max         yaml.Node            `yaml:"max"`
	RemoveBy    string               `yaml:"remove_by"`
	Values      map[string]yaml.Node `yaml:"values"`
}

const fieldList = "name, type, default, owner, description, allowed, min, max, remove_by, values"

var knownField = func() map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Split(fieldList, ", ") {
		m[f] = true
	}
	return m
}()

type rawCatalog struct {
	Flags []yaml.Node `yaml:"flags"`
}

// Load reads and validates the catalogue file.
func Load(path string) (*Catalog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the flag catalogue: %w", err)
	}
	return Parse(path, b)
}

// Parse validates a catalogue; every error names the file, and the flag
// and line where there is one, and says what is expected.
func Parse(file string, data []byte) (*Catalog, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var raw rawCatalog
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty; expected a top-level `flags:` list", file)
		}
		return nil, fmt.Errorf("%s: %v (the only top-level key is `flags:`)", file, err)
	}
	if len(raw.Flags) == 0 {
		return nil, fmt.Errorf("%s: no flags; expected a top-level `flags:` list with at least one entry", file)
	}
	c := &Catalog{File: file}
	var problems []string
	seen := map[string]int{}
	for i := range raw.Flags {
		n := &raw.Flags[i]
		var r rawFlag
		// Node.Decode does not inherit KnownFields: the keys are checked here.
		if n.Kind == yaml.MappingNode {
			for k := 0; k+1 < len(n.Content); k += 2 {
				if key := n.Content[k]; !knownField[key.Value] {
					problems = append(problems, fmt.Sprintf("%s:%d: flag #%d: field %s not found (fields: %s)", file, key.Line, i+1, key.Value, fieldList))
				}
			}
		}
		if err := n.Decode(&r); err != nil {
			problems = append(problems, fmt.Sprintf("%s:%d: flag #%d: %v (fields: %s)",
				file, n.Line, i+1, yamlMessage(err), fieldList))
			continue
		}
		f, errs := validate(r, n)
		label := r.Name
		if label == "" {
			label = fmt.Sprintf("#%d", i+1)
		}
		for _, e := range errs {
			problems = append(problems, fmt.Sprintf("%s:%d: flag %q: %s", file, n.Line, label, e))
		}
		if r.Name != "" {
			if first, dup := seen[r.Name]; dup {
				problems = append(problems, fmt.Sprintf("%s:%d: flag %q: duplicate name (first defined on line %d); names must be unique", file, n.Line, r.Name, first))
			} else {
				seen[r.Name] = n.Line
			}
		}
		if len(errs) == 0 {
			c.Flags = append(c.Flags, f)
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return c, nil
}

// yamlMessage drops the decoder's "yaml: unmarshal errors:" preamble.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return strings.Join(te.Errors, "; ")
	}
	return err.Error()
}

func validate(r rawFlag, n *yaml.Node) (Flag, []string) {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	f := Flag{Name: r.Name, Type: Type(r.Type), Owner: r.Owner, Description: strings.TrimSpace(r.Description), RemoveBy: r.RemoveBy, Line: n.Line}

	switch {
	case r.Name == "":
		bad("name is missing; expected <service>.<area>.<name>, e.g. gc.http3.enabled")
	case !namePattern.MatchString(r.Name):
		bad("name does not match <service>.<area>.<name> (lower case letters, digits and _ in three dot-separated parts, e.g. gc.http3.enabled)")
	default:
		svc, _, _ := strings.Cut(r.Name, ".")
		want, ok := Owners[svc]
		switch {
		case !ok:
			bad("name starts with %q, not a known service (%s)", svc, knownServices())
		case r.Owner == "":
			bad("owner is missing; a %s.* flag is owned by %s", svc, want)
		case r.Owner != want:
			bad("owner %q does not match the name: a %s.* flag is owned by %s", r.Owner, svc, want)
		}
	}
	if f.Description == "" {
		bad("description is missing; say what the flag does")
	}
	switch f.Type {
	case Bool, Int, Float, String:
	case "":
		bad("type is missing; expected bool, int, float or string")
		return f, errs
	default:
		bad("type %q is not bool, int, float or string", r.Type)
		return f, errs
	}

	if r.Min.Kind != 0 || r.Max.Kind != 0 {
		if f.Type != Int && f.Type != Float {
			bad("min/max apply to int and float flags only, not %s", f.Type)
		} else {
			f.Min = bound(&r.Min, "min", f.Type, bad)
			f.Max = bound(&r.Max, "max", f.Type, bad)
			if f.Min != nil && f.Max != nil && *f.Min > *f.Max {
				bad("min %v is above max %v", *f.Min, *f.Max)
			}
		}
	}
	if len(r.Allowed) > 0 {
		if f.Type == Bool {
			bad("allowed does not apply to a bool flag (its values are true and false)")
		}
		for _, a := range r.Allowed {
			v, err := canonical(f.Type, &a)
			if err != nil {
				bad("allowed value %q: %v", a.Value, err)
				continue
			}
			f.Allowed = append(f.Allowed, v)
		}
	}

	if r.Default.Kind == 0 {
		bad("default is missing; expected a %s that is safe if etcd and the cache are both gone", f.Type)
	} else if v, err := canonical(f.Type, &r.Default); err != nil {
		bad("default %q: %v", r.Default.Value, err)
	} else if err := f.Check(v); err != nil {
		bad("default %s: %v", v, err)
	} else {
		f.Default = v
	}

	if r.RemoveBy != "" {
		if _, err := time.Parse(time.DateOnly, r.RemoveBy); err != nil {
			bad("remove_by %q is not a date YYYY-MM-DD", r.RemoveBy)
		}
	}
	for env, node := range r.Values {
		if !envPattern.MatchString(env) {
			bad("values: environment %q is not a lower-case name (e.g. prod, staging)", env)
			continue
		}
		v, err := canonical(f.Type, &node)
		if err == nil {
			err = f.Check(v)
		}
		if err != nil {
			bad("values.%s %q: %v", env, node.Value, err)
			continue
		}
		if f.Values == nil {
			f.Values = map[string]string{}
		}
		f.Values[env] = v
	}
	return f, errs
}

func knownServices() string {
	return "ac, gc, mc, mh or platform"
}

func bound(n *yaml.Node, field string, t Type, bad func(string, ...any)) *float64 {
	if n.Kind == 0 {
		return nil
	}
	v, err := canonical(t, n)
	if err != nil {
		bad("%s %q: %v", field, n.Value, err)
		return nil
	}
	x, _ := strconv.ParseFloat(v, 64)
	return &x
}

// canonical converts a YAML scalar of the flag's type to its canonical
// text; a scalar YAML resolves to another type (default: "false" for a
// bool, default: 5 for a string) is a mismatch, not a conversion.
func canonical(t Type, n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("expected a single %s value, not a list or map", t)
	}
	switch t {
	case Bool:
		if n.Tag != "!!bool" {
			return "", fmt.Errorf("not a bool (expected true or false, unquoted)")
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			return "", err
		}
		return strconv.FormatBool(b), nil
	case Int:
		if n.Tag != "!!int" {
			return "", fmt.Errorf("not an int (expected a whole number, unquoted)")
		}
		var i int64
		if err := n.Decode(&i); err != nil {
			return "", err
		}
		return strconv.FormatInt(i, 10), nil
	case Float:
		if n.Tag != "!!float" && n.Tag != "!!int" {
			return "", fmt.Errorf("not a float (expected a number, unquoted)")
		}
		var x float64
		if err := n.Decode(&x); err != nil {
			return "", err
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("not a finite number")
		}
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case String:
		if n.Tag != "!!str" {
			return "", fmt.Errorf("not a string (YAML reads it as %s; quote it)", strings.TrimPrefix(n.Tag, "!!"))
		}
		if n.Value == "" {
			return "", fmt.Errorf("empty; a string flag's value must not be empty")
		}
		return n.Value, nil
	}
	return "", fmt.Errorf("unknown type %s", t)
}

// Check says whether a canonical value is allowed for the flag (bounds
// and the allowed list); the sync and the generator rely on it.
func (f Flag) Check(v string) error {
	if len(f.Allowed) > 0 {
		ok := false
		for _, a := range f.Allowed {
			ok = ok || a == v
		}
		if !ok {
			return fmt.Errorf("not one of the allowed values (%s)", strings.Join(f.Allowed, ", "))
		}
	}
	if f.Type == Int || f.Type == Float {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("not a number")
		}
		if f.Min != nil && x < *f.Min {
			return fmt.Errorf("below the minimum %v", *f.Min)
		}
		if f.Max != nil && x > *f.Max {
			return fmt.Errorf("above the maximum %v", *f.Max)
		}
	}
	return nil
}

// ValueFor is the value the flag has in an environment: its values entry,
// else its default.
func (f Flag) ValueFor(env string) string {
	if v, ok := f.Values[env]; ok {
		return v
	}
	return f.Default
}

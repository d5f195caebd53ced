package scan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// ExceptionsFile is the accepted-risk list at the repository root.
const ExceptionsFile = ".trivyignore.yaml"

// Exception accepts one vulnerability until it expires, optionally only
// for some services or packages.
type Exception struct {
	ID       string   `yaml:"id"`
	Reason   string   `yaml:"reason"`
	Expires  string   `yaml:"expires"`            // YYYY-MM-DD, the last day it applies
	Services []string `yaml:"services,omitempty"` // empty: every service
	Packages []string `yaml:"packages,omitempty"` // empty: every package
	until    time.Time
}

// Exceptions are the file's usable entries and the problems with the
// others (expired or malformed entries suppress nothing and are reported).
type Exceptions struct {
	Entries  []*Exception
	Problems []string
}

type exceptionsFile struct {
	Vulnerabilities []yaml.Node `yaml:"vulnerabilities"`
}

// LoadExceptions reads path; a missing file is no exceptions. A file that
// is not YAML at all is an error; a bad entry is a problem, not an error.
func LoadExceptions(path string, now time.Time) (*Exceptions, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Exceptions{}, nil
	}
	if err != nil {
		return nil, err
	}
	var f exceptionsFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w (expected `vulnerabilities:` with entries of id, reason, expires, optional services and packages)", path, err)
	}
	ex := &Exceptions{}
	today := now.UTC().Truncate(24 * time.Hour)
	for i, node := range f.Vulnerabilities {
		var e Exception
		where := fmt.Sprintf("%s: entry %d (line %d)", path, i+1, node.Line)
		if err := decodeStrict(&node, &e); err != nil {
			ex.Problems = append(ex.Problems, fmt.Sprintf("%s: malformed: %v; it suppresses nothing", where, err))
			continue
		}
		if e.ID != "" {
			where += " " + e.ID
		}
		var missing []string
		for field, v := range map[string]string{"id": e.ID, "reason": e.Reason, "expires": e.Expires} {
			if v == "" {
				missing = append(missing, field)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			ex.Problems = append(ex.Problems, fmt.Sprintf("%s: missing %v; it suppresses nothing", where, missing))
			continue
		}
		until, err := time.Parse(time.DateOnly, e.Expires)
		if err != nil {
			ex.Problems = append(ex.Problems, fmt.Sprintf("%s: expires %q is not YYYY-MM-DD; it suppresses nothing", where, e.Expires))
			continue
		}
		if until.Before(today) {
			ex.Problems = append(ex.Problems, fmt.Sprintf("%s: expired on %s; it suppresses nothing (fix the finding, or renew with a reason)", where, e.Expires))
			continue
		}
		e.until = until
		ex.Entries = append(ex.Entries, &e)
	}
	return ex, nil
}

var exceptionFields = []string{"id", "reason", "expires", "services", "packages"}

// decodeStrict decodes an entry, refusing keys it does not know (a typo
// such as "expire" must not silently make an entry permanent).
func decodeStrict(node *yaml.Node, e *Exception) error {
	if node.Kind != yaml.MappingNode {
		return fmt.Errorf("expected a mapping of %v", exceptionFields)
	}
	for i := 0; i < len(node.Content); i += 2 {
		if k := node.Content[i].Value; !slices.Contains(exceptionFields, k) {
			return fmt.Errorf("unknown field %q (known: %v)", k, exceptionFields)
		}
	}
	return node.Decode(e)
}

// Covering returns the entry accepting vulnerability id in pkg of service.
func (ex *Exceptions) Covering(id, service, pkg string) *Exception {
	if ex == nil {
		return nil
	}
	for _, e := range ex.Entries {
		if e.ID != id {
			continue
		}
		if len(e.Services) > 0 && !slices.Contains(e.Services, service) {
			continue
		}
		if len(e.Packages) > 0 && !slices.Contains(e.Packages, pkg) {
			continue
		}
		return e
	}
	return nil
}

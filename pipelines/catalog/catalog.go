// Package catalog loads the declarative image specs in images/: what each
// Dark Tower image is built from and how it is assembled. It is the first
// stage of the pipeline; every later stage takes its Specs.
//
// images/ is build-all's default set (the services); images/platform/
// holds the third-party programs the clusters run (Flagger, Traefik),
// built from a tool module under tools/ whose main package is one of that
// module's dependencies (main: an import path rather than ./cmd/NAME).
package catalog

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Spec describes one image.
type Spec struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Module      string            `json:"module"`
	Main        string            `json:"main"` // ./cmd/NAME (the module's), or a dependency's import path (Spec.Relative)
	Binary      string            `json:"binary"`
	Ports       []string          `json:"ports"`
	Base        string            `json:"base"`
	Platforms   []Platform        `json:"platforms"`
	Labels      map[string]string `json:"labels,omitempty"`

	File string `json:"-"` // where the spec was read from
}

// Platform is an os/arch pair such as linux/amd64.
type Platform struct{ OS, Arch string }

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// SupportedPlatforms are the platforms a static Go binary on distroless can target.
var SupportedPlatforms = []string{"linux/amd64", "linux/arm64"}

// ParsePlatform parses and checks "os/arch".
func ParsePlatform(s string) (Platform, error) {
	if !slices.Contains(SupportedPlatforms, s) {
		return Platform{}, fmt.Errorf("platform %q is not supported (use one of %s)", s, strings.Join(SupportedPlatforms, ", "))
	}
	os, arch, _ := strings.Cut(s, "/")
	return Platform{OS: os, Arch: arch}, nil
}

// UnmarshalJSON reads "os/arch".
func (p *Platform) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("platform must be a string like \"linux/amd64\"")
	}
	*p, err = ParsePlatform(s)
	return err
}

// MarshalJSON writes "os/arch".
func (p Platform) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(p.String())), nil }

// Port is an exposed port "N/tcp" or "N/udp".
var portPattern = regexp.MustCompile(`^([0-9]{1,5})/(tcp|udp)$`)
var importPath = regexp.MustCompile(`^[a-z0-9.-]+\.[a-z]+(/[A-Za-z0-9._~-]+)+$`)
var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (s *Spec) validate() error {
	var problems []string
	bad := func(f string, a ...any) { problems = append(problems, fmt.Sprintf(f, a...)) }
	if !namePattern.MatchString(s.Name) {
		bad("name %q must be a DNS label", s.Name)
	}
	if s.Module == "" || filepath.IsAbs(s.Module) || strings.Contains(s.Module, "..") {
		bad("module must be a directory inside the repository, e.g. services")
	}
	if !strings.HasPrefix(s.Main, "./") && (!importPath.MatchString(s.Main) || strings.Contains(s.Main, "..")) {
		bad("main must be a package path relative to the module, e.g. ./cmd/%s, or a dependency's package import path, e.g. example.com/%s/cmd/%s", s.Name, s.Name, s.Name)
	}
	if !strings.HasPrefix(s.Binary, "/") || strings.HasSuffix(s.Binary, "/") {
		bad("binary must be an absolute file path, e.g. /usr/local/bin/%s", s.Name)
	}
	for _, p := range s.Ports {
		m := portPattern.FindStringSubmatch(p)
		if n, _ := strconv.Atoi(m2(m)); m == nil || n < 1 || n > 65535 {
			bad("port %q must be N/tcp or N/udp with 1 ≤ N ≤ 65535", p)
		}
	}
	if s.Base == "" {
		bad("base must name the base image reference (e.g. gcr.io/distroless/static-debian12:nonroot)")
	}
	if len(s.Platforms) == 0 {
		bad("platforms must list at least one of %s", strings.Join(SupportedPlatforms, ", "))
	}
	seen := map[Platform]bool{}
	for _, p := range s.Platforms {
		if seen[p] {
			bad("platform %s is listed twice", p)
		}
		seen[p] = true
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

func m2(m []string) string {
	if len(m) < 2 {
		return ""
	}
	return m[1]
}

// Catalog is every spec, by name.
type Catalog struct {
	Dir   string
	specs map[string]*Spec
}

// Load reads every *.yaml in dir strictly.
func Load(dir string) (*Catalog, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no image specs (*.yaml) in %s", dir)
	}
	c := &Catalog{Dir: dir, specs: map[string]*Spec{}}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var s Spec
		if err := yaml.UnmarshalStrict(raw, &s); err != nil {
			return nil, fmt.Errorf("image spec %s: %w", f, err)
		}
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("image spec %s: %w", f, err)
		}
		if prev, dup := c.specs[s.Name]; dup {
			return nil, fmt.Errorf("image spec %s: name %q is already defined in %s", f, s.Name, prev.File)
		}
		s.File = f
		c.specs[s.Name] = &s
	}
	return c, nil
}

// Relative reports whether the main package is the module's own
// (./cmd/NAME) rather than the import path of a package of one of its
// dependencies (a tool module pinning a third-party program, e.g.
// github.com/fluxcd/flagger/cmd/flagger).
func (s *Spec) Relative() bool { return strings.HasPrefix(s.Main, "./") }

// Names lists the services, sorted.
func (c *Catalog) Names() []string {
	names := make([]string, 0, len(c.specs))
	for n := range c.specs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Select returns the named specs (all when names is empty), sorted by name.
func (c *Catalog) Select(names []string) ([]*Spec, error) {
	if len(names) == 0 {
		names = c.Names()
	}
	out := make([]*Spec, 0, len(names))
	for _, n := range names {
		s, ok := c.specs[n]
		if !ok {
			return nil, fmt.Errorf("unknown service %q (known: %s)", n, strings.Join(c.Names(), ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

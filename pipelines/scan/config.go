package scan

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ConfigFile is the gate's settings (ADR-0012's infra/ci/image-scan.yaml,
// in Trivy's configuration format), relative to the repository root: the
// one place the threshold and the exceptions file are set.
const ConfigFile = "infra/ci/image-scan.yaml"

// ExitBlocked is the CLI's exit status when the gate blocks; the config's
// exit-code must say the same.
const ExitBlocked = 3

// GateConfig is what the pipeline takes from ConfigFile.
type GateConfig struct {
	Threshold  string // the lowest severity listed
	Exceptions string // ignorefile, relative to the repository root
	Source     string // the file read, or "built-in defaults"
}

// trivyConfig is the part of Trivy's configuration the gate honours;
// any other key is refused (it would look like a setting and do nothing).
type trivyConfig struct {
	Severity []string `yaml:"severity"`
	ExitCode int      `yaml:"exit-code"`
	Scan     struct {
		Scanners []string `yaml:"scanners"`
	} `yaml:"scan"`
	Vulnerability struct {
		Type          []string `yaml:"type"`
		IgnoreUnfixed bool     `yaml:"ignore-unfixed"`
	} `yaml:"vulnerability"`
	IgnoreFile string `yaml:"ignorefile"`
}

var severityOrder = []string{"LOW", "MEDIUM", "HIGH", "CRITICAL"}

// LoadGateConfig reads the gate's settings from path. A missing file
// gives the ADR's defaults (CRITICAL, .trivyignore.yaml) — a repository
// without infra/, such as a test fixture; a file with anything the gate
// does not do fails, naming every problem.
func LoadGateConfig(path string) (GateConfig, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return GateConfig{Threshold: DefaultThreshold, Exceptions: ExceptionsFile, Source: "built-in defaults (no " + ConfigFile + ")"}, nil
	}
	if err != nil {
		return GateConfig{}, err
	}
	var c trivyConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return GateConfig{}, fmt.Errorf("%s: %w (the gate honours severity, exit-code, scan.scanners, vulnerability.type, vulnerability.ignore-unfixed and ignorefile)", path, err)
	}
	var problems []error
	bad := func(f string, a ...any) {
		problems = append(problems, fmt.Errorf("%s: "+f, append([]any{path}, a...)...))
	}
	// severity lists what blocks: one severity and every one above it.
	lowest := -1
	for _, s := range c.Severity {
		i := slices.Index(severityOrder, strings.ToUpper(s))
		if i < 0 {
			bad("severity %q: expected LOW, MEDIUM, HIGH or CRITICAL", s)
			continue
		}
		if lowest < 0 || i < lowest {
			lowest = i
		}
	}
	if len(c.Severity) == 0 {
		bad("severity: list what blocks, e.g. [CRITICAL]")
	} else if lowest >= 0 {
		for _, s := range severityOrder[lowest:] {
			if !slices.ContainsFunc(c.Severity, func(v string) bool { return strings.EqualFold(v, s) }) {
				bad("severity %v: the gate blocks at a threshold and above, so it must also list %s", c.Severity, s)
			}
		}
	}
	if c.ExitCode != ExitBlocked {
		bad("exit-code %d: the pipeline exits %d when the gate blocks", c.ExitCode, ExitBlocked)
	}
	if !slices.Equal(c.Scan.Scanners, []string{"vuln"}) {
		bad("scan.scanners %v: the gate runs the vulnerability scanner only: [vuln]", c.Scan.Scanners)
	}
	if !slices.Equal(c.Vulnerability.Type, []string{"os", "library"}) {
		bad("vulnerability.type %v: the gate matches OS packages and Go modules: [os, library]", c.Vulnerability.Type)
	}
	if c.Vulnerability.IgnoreUnfixed {
		bad("vulnerability.ignore-unfixed: true is not supported: an unfixed CRITICAL blocks until an exception accepts it")
	}
	if c.IgnoreFile == "" {
		bad("ignorefile: name the exceptions file, e.g. %s", ExceptionsFile)
	}
	if len(problems) > 0 {
		return GateConfig{}, errors.Join(problems...)
	}
	return GateConfig{Threshold: severityOrder[lowest], Exceptions: c.IgnoreFile, Source: path}, nil
}

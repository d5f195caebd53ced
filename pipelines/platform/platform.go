// Package platform reads infra/platform/charts.yaml: the Helm charts the
// platform installs, in order, each pinned to an exact version.
package platform

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// Chart is one pinned Helm chart.
type Chart struct {
	Name      string `json:"name"`      // the Helm release name
	Repo      string `json:"repo"`      // chart repository URL
	Chart     string `json:"chart"`     // chart name in the repository
	Version   string `json:"version"`   // exact chart version
	Namespace string `json:"namespace"` // release namespace
	Values    string `json:"values"`    // values file, relative to infra/platform
}

var exactVersion = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+$`)

// LoadCharts reads and checks a charts file.
func LoadCharts(path string) ([]Chart, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var file struct {
		Charts []Chart `json:"charts"`
	}
	if err := yaml.UnmarshalStrict(raw, &file); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var problems []string
	for i, c := range file.Charts {
		if c.Name == "" || c.Repo == "" || c.Chart == "" || c.Namespace == "" || c.Values == "" {
			problems = append(problems, fmt.Sprintf("entry %d (%s): name, repo, chart, namespace and values are all required", i+1, c.Name))
		}
		if !exactVersion.MatchString(c.Version) {
			problems = append(problems, fmt.Sprintf("%s: version %q is not an exact version (pin it, e.g. 1.2.3)", c.Name, c.Version))
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s: %s", path, strings.Join(problems, "; "))
	}
	return file.Charts, nil
}

// TSV is one line per chart: name, repo, chart, version, namespace, values
// (for shell loops: `while IFS=$'\t' read -r ...`).
func TSV(charts []Chart) string {
	var b strings.Builder
	for _, c := range charts {
		fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Repo, c.Chart, c.Version, c.Namespace, c.Values)
	}
	return b.String()
}

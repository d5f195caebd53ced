package policy

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	flaggerv1beta1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// ADR-0012 §9: 5% → 10% → 50% → 100%, roll back above 150% of the
// baseline's error rate or 2x its p99, within 2 minutes.
var (
	canarySteps         = []int{5, 10, 50}
	errorRateVsBaseline = 1.5
	p99VsBaseline       = 2.0
	rollbackWithin      = 2 * time.Minute
)

func TestCanariesRollBackAtTheADRThresholds(t *testing.T) {
	r := decoded(t, "ci")
	prod := decoded(t, "overlays/prod")
	deployments := map[string]bool{}
	for _, d := range All[*appsv1.Deployment](prod) {
		deployments[d.Name] = true
	}
	templates := map[string]*flaggerv1beta1.MetricTemplate{}
	for _, m := range All[*flaggerv1beta1.MetricTemplate](r) {
		templates[m.Name] = m
	}
	canaries := All[*flaggerv1beta1.Canary](r)
	var names []string
	for _, c := range canaries {
		names = append(names, c.Spec.TargetRef.Name)
		if c.Spec.TargetRef.Kind != "Deployment" || !deployments[c.Spec.TargetRef.Name] {
			t.Errorf("canary %s targets %s %s, not a deployed Deployment", c.Name, c.Spec.TargetRef.Kind, c.Spec.TargetRef.Name)
		}
		a := c.Spec.Analysis
		if a == nil {
			t.Errorf("canary %s has no analysis", c.Name)
			continue
		}
		if !slices.Equal(a.StepWeights, canarySteps) {
			t.Errorf("canary %s steps %v, the ADR says %v then 100", c.Name, a.StepWeights, canarySteps)
		}
		interval, err := time.ParseDuration(a.Interval)
		if err != nil || time.Duration(a.Threshold)*interval > rollbackWithin {
			t.Errorf("canary %s: %d failed checks every %s do not roll back within %s", c.Name, a.Threshold, a.Interval, rollbackWithin)
		}
		limits := map[string]float64{}
		for _, m := range a.Metrics {
			if m.TemplateRef == nil || templates[m.TemplateRef.Name] == nil || m.ThresholdRange == nil || m.ThresholdRange.Max == nil {
				t.Errorf("canary %s metric %s: needs a known template and a max", c.Name, m.Name)
				continue
			}
			limits[m.TemplateRef.Name] = *m.ThresholdRange.Max
		}
		if limits["error-rate-vs-baseline"] != errorRateVsBaseline || limits["p99-latency-vs-baseline"] != p99VsBaseline || len(limits) != 2 {
			t.Errorf("canary %s limits %v, want error rate ≤ %v× and p99 ≤ %v× baseline", c.Name, limits, errorRateVsBaseline, p99VsBaseline)
		}
	}
	slices.Sort(names)
	if want := []string{"global-controller", "media-handler", "meeting-controller"}; !slices.Equal(names, want) {
		t.Errorf("canaries for %v, want %v (ac-service is a StatefulSet, which Flagger cannot canary)", names, want)
	}
	// The templates are PromQL once Flagger fills in its variables, and
	// compare the canary with its primary (the baseline).
	p := parser.NewParser(parser.Options{})
	for name, m := range templates {
		q := strings.NewReplacer("{{ namespace }}", "dark-tower", "{{ target }}", "media-handler", "{{ interval }}", "1m").Replace(m.Spec.Query)
		if _, err := p.ParseExpr(q); err != nil {
			t.Errorf("template %s is not PromQL: %v", name, err)
		}
		if !strings.Contains(m.Spec.Query, `"{{ target }}-primary"`) {
			t.Errorf("template %s does not compare with the primary (baseline)", name)
		}
	}
}

func TestTrivyGateBlocksCritical(t *testing.T) {
	raw, err := os.ReadFile("../infra/ci/image-scan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Severity []string `json:"severity"`
		ExitCode int      `json:"exit-code"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Severity, []string{"CRITICAL"}) || cfg.ExitCode == 0 {
		t.Fatalf("image-scan.yaml: severity %v exit-code %d; ADR-0012 §7: CRITICAL blocks", cfg.Severity, cfg.ExitCode)
	}
}

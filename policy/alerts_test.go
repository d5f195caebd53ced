package policy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

func alertRules(t *testing.T) map[string]monitoringv1.Rule {
	t.Helper()
	r := decoded(t, "platform/observability")
	rules := map[string]monitoringv1.Rule{}
	for _, pr := range All[*monitoringv1.PrometheusRule](r) {
		for _, g := range pr.Spec.Groups {
			for _, rule := range g.Rules {
				if _, dup := rules[rule.Alert]; dup {
					t.Errorf("alert %s defined twice", rule.Alert)
				}
				rules[rule.Alert] = rule
			}
		}
	}
	return rules
}

// metricsOf lists the metric names an expression selects.
func metricsOf(expr parser.Expr) []string {
	var names []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					names = append(names, m.Value)
				}
			}
		}
		return nil
	})
	return names
}

func TestAlertsImplementEveryADRThresholdExactly(t *testing.T) {
	rules := alertRules(t)
	if len(rules) != len(Thresholds) {
		t.Errorf("%d alerts, want exactly the %d thresholds", len(rules), len(Thresholds))
	}
	p := parser.NewParser(parser.Options{})
	for _, th := range Thresholds {
		rule, ok := rules[th.Alert]
		if !ok {
			t.Errorf("no alert %s", th.Alert)
			continue
		}
		expr, err := p.ParseExpr(rule.Expr.String())
		if err != nil {
			t.Errorf("%s: not valid PromQL: %v", th.Alert, err)
			continue
		}
		bin, ok := expr.(*parser.BinaryExpr)
		if !ok || bin.Op.String() != th.Compare {
			t.Errorf("%s: top of the expression is %T %v, want a %s comparison", th.Alert, expr, expr, th.Compare)
			continue
		}
		num, ok := bin.RHS.(*parser.NumberLiteral)
		if !ok || num.Val != th.Value {
			t.Errorf("%s: compares with %v, the ADR says %v", th.Alert, bin.RHS, th.Value)
		}
		if rule.For == nil || string(*rule.For) != th.For {
			t.Errorf("%s: for %v, want %s", th.Alert, rule.For, th.For)
		}
		if rule.Labels["severity"] != th.Severity {
			t.Errorf("%s: severity %q, want %q", th.Alert, rule.Labels["severity"], th.Severity)
		}
	}
}

// Every alert links a runbook that exists, and every metric an alert reads
// from the services is one the services export.
func TestAlertsHaveRunbooksAndRealMetrics(t *testing.T) {
	exported := serviceMetricNames(t)
	p := parser.NewParser(parser.Options{})
	for name, rule := range alertRules(t) {
		url := rule.Annotations["runbook_url"]
		const prefix = "https://github.com/darktower/delivery/blob/main/"
		if !strings.HasPrefix(url, prefix) {
			t.Errorf("%s: runbook_url %q is not a file of this repository", name, url)
		} else if _, err := os.Stat(filepath.Join("..", strings.TrimPrefix(url, prefix))); err != nil {
			t.Errorf("%s: runbook %s: %v", name, url, err)
		}
		if rule.Annotations["summary"] == "" {
			t.Errorf("%s: no summary", name)
		}
		expr, err := p.ParseExpr(rule.Expr.String())
		if err != nil {
			continue // reported by the test above
		}
		for _, m := range metricsOf(expr) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
			ours := strings.HasPrefix(m, "mh_") || strings.HasPrefix(m, "mc_") || strings.HasPrefix(m, "db_pool_") || strings.HasPrefix(m, "http_")
			if ours && !exported[base] {
				t.Errorf("%s reads %s, which no service exports", name, m)
			}
		}
	}
}

// serviceMetricNames reads the metric names declared in services/.
func serviceMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`Name:\s+"([a-z_]+)"`)
	names := map[string]bool{}
	err := filepath.WalkDir("../services/internal", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil || !names["mh_forwarding_latency_seconds"] {
		t.Fatalf("reading the services' metric names: %v (found %d)", err, len(names))
	}
	return names
}

package policy

import (
	"slices"
	"testing"

	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	appsv1 "k8s.io/api/apps/v1"
)

const otelConfig = "../infra/platform/observability/otel-collector-config.yaml"

// ADR-0012 §11: 100% of errors, 100% of requests slower than 500 ms, 10%
// of the rest — decoded by the tail-sampling processor's own config code
// (unknown keys fail), validated by it, then compared.
func TestOTelTailSamplingIsTheADRStrategy(t *testing.T) {
	cm, err := confmaptest.LoadConf(otelConfig)
	if err != nil {
		t.Fatal(err)
	}
	processors, err := cm.Sub("processors")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := processors.Sub("tail_sampling")
	if err != nil {
		t.Fatal(err)
	}
	cfg := tailsamplingprocessor.NewFactory().CreateDefaultConfig().(*tailsamplingprocessor.Config)
	if err := sub.Unmarshal(cfg); err != nil {
		t.Fatalf("tail_sampling does not decode into the processor's Config: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the processor refuses its config: %v", err)
	}
	if len(cfg.PolicyCfgs) != 3 {
		t.Fatalf("%d policies, want the ADR's three", len(cfg.PolicyCfgs))
	}
	var errorsKept, slowKept, restPercent bool
	for _, p := range cfg.PolicyCfgs {
		switch p.Type {
		case tailsamplingprocessor.StatusCode:
			errorsKept = slices.Equal(p.StatusCodeCfg.StatusCodes, []string{"ERROR"})
		case tailsamplingprocessor.Latency:
			slowKept = p.LatencyCfg.ThresholdMs == 500 && p.LatencyCfg.UpperThresholdMs == 0
		case tailsamplingprocessor.Probabilistic:
			restPercent = p.ProbabilisticCfg.SamplingPercentage == 10
		default:
			t.Errorf("policy %q of type %s is not in the ADR", p.Name, p.Type)
		}
	}
	if !errorsKept || !slowKept || !restPercent {
		t.Errorf("errors 100%%: %v, >500 ms 100%%: %v, rest 10%%: %v", errorsKept, slowKept, restPercent)
	}
	// And the traces pipeline actually runs it.
	var pipeline struct {
		Processors []string `mapstructure:"processors"`
	}
	traces, err := cm.Sub("service::pipelines::traces")
	if err != nil {
		t.Fatal(err)
	}
	if err := traces.Unmarshal(&pipeline, confmap.WithIgnoreUnused()); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pipeline.Processors, "tail_sampling") {
		t.Errorf("the traces pipeline does not use tail_sampling: %v", pipeline.Processors)
	}
}

func TestOTelCollectorRunsAsADaemonSet(t *testing.T) {
	r := decoded(t, "platform/observability")
	var found bool
	for _, d := range All[*appsv1.DaemonSet](r) {
		found = found || d.Name == "otel-collector"
	}
	if !found {
		t.Fatal("no otel-collector DaemonSet (ADR-0012 §11: one collector per node, not a sidecar)")
	}
}

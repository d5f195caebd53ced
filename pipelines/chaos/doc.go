// Package chaos reads Dark Tower's chaos experiments for the CI chaos
// stage (ADR-0012: LitmusChaos experiments in CI): the stage's settings
// (infra/ci/chaos-tests.yaml), the ChaosExperiment definitions
// (infra/platform/chaos) and the ChaosEngines as an environment renders
// them (infra/overlays/<env>/chaos, from infra/platform/chaos/engines), as
// typed Go values; and the rules by which Litmus 3.x evaluates a probe
// (probe.go), so the executor can say what a verdict means and how long
// to wait for one. It is the source of truth a `chaos run` command reads;
// it applies nothing.
package chaos

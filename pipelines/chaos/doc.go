// Package chaos is Dark Tower's CI chaos stage (ADR-0012: LitmusChaos
// experiments in CI). It reads the stage's settings
// (infra/ci/chaos-tests.yaml), the ChaosExperiment definitions
// (infra/platform/chaos) and the ChaosEngines as an environment renders
// them (infra/overlays/<env>/chaos, from infra/platform/chaos/engines) as
// typed Go values, and holds the rules by which Litmus 3.x evaluates a
// probe (probe.go). Run executes the engines: where Litmus is installed by
// applying them and reading its ChaosResults (litmus.go), elsewhere with
// the pipeline's own executor (executor.go, faults.go, probes.go), which
// injects the same faults and judges the same probes by the same rules.
// The engines stay the single source of truth of what is broken and what
// must hold.
package chaos

package chaos

import (
	"fmt"
	"testing"
	"time"
)

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }

// When each mode checks (litmus-go pkg/probe/probe.go RunProbes).
func TestModeChecks(t *testing.T) {
	want := map[Mode][3]bool{ // PreChaos, DuringChaos, PostChaos
		SOT:        {true, false, false},
		EOT:        {false, false, true},
		Edge:       {true, false, true},
		Continuous: {true, true, true},
		OnChaos:    {false, true, false},
	}
	for m, w := range want {
		for i, p := range []Phase{PreChaos, DuringChaos, PostChaos} {
			if got := m.Checks(p); got != w[i] {
				t.Errorf("%s checks in %s: %v, want %v", m, p, got, w[i])
			}
		}
	}
	if Mode("Always").Valid() || !OnChaos.Valid() {
		t.Error("Valid")
	}
}

func TestJudge(t *testing.T) {
	pass, fail := []bool{true}, []bool{false}
	for _, c := range []struct {
		name   string
		mode   Mode
		stop   bool
		o      Outcomes
		want   Verdict
		stops  bool
		decide Phase
	}{
		{"SOT passes before", SOT, false, Outcomes{PreChaos: pass}, Passed, false, PreChaos},
		{"SOT fails before, experiment goes on", SOT, false, Outcomes{PreChaos: fail}, Failed, false, PreChaos},
		{"SOT fails before, stopOnFailure: no chaos", SOT, true, Outcomes{PreChaos: fail}, Failed, true, PreChaos},
		{"EOT ignores what it never checks", EOT, false, Outcomes{PreChaos: fail, PostChaos: pass}, Passed, false, PostChaos},
		{"EOT fails after", EOT, false, Outcomes{PostChaos: fail}, Failed, false, PostChaos},
		{"Edge passes both", Edge, false, Outcomes{PreChaos: pass, PostChaos: pass}, Passed, false, PostChaos},
		{"Edge failure before stands", Edge, false, Outcomes{PreChaos: fail, PostChaos: pass}, Failed, false, PreChaos},
		{"Edge fails after", Edge, false, Outcomes{PreChaos: pass, PostChaos: fail}, Failed, false, PostChaos},
		{"Edge never checked after", Edge, false, Outcomes{PreChaos: pass}, NA, false, ""},
		{"Continuous all pass", Continuous, false, Outcomes{PreChaos: pass, DuringChaos: []bool{true, true, true}}, Passed, false, PostChaos},
		{"Continuous one failure during chaos", Continuous, false, Outcomes{PreChaos: pass, DuringChaos: []bool{true, false}}, Failed, false, PostChaos},
		{"Continuous stopOnFailure stops the engine", Continuous, true, Outcomes{DuringChaos: fail}, Failed, true, PostChaos},
		{"OnChaos ignores before", OnChaos, false, Outcomes{PreChaos: fail, DuringChaos: pass}, Passed, false, PostChaos},
		{"OnChaos fails during", OnChaos, false, Outcomes{DuringChaos: []bool{true, false, true}}, Failed, false, PostChaos},
		{"never run", OnChaos, false, Outcomes{}, NA, false, ""},
	} {
		j, err := Judge(c.mode, c.stop, c.o)
		if err != nil {
			t.Fatal(err)
		}
		if j.Verdict != c.want || j.StopsExperiment != c.stops || j.DecidedIn != c.decide {
			t.Errorf("%s: %+v, want %s stops=%v in %q", c.name, j, c.want, c.stops, c.decide)
		}
	}
	if _, err := Judge("Always", false, nil); err == nil {
		t.Error("an unknown mode was judged")
	}
}

// retry is the number of tries in all (litmus-go getAttempts).
func TestAttemptsAndTriggers(t *testing.T) {
	for _, c := range []struct{ retry, attempt, want int }{{0, 0, 1}, {3, 0, 3}, {5, 2, 2}, {0, 4, 4}} {
		if got := (RunProperties{Retry: c.retry, Attempt: c.attempt}).Attempts(); got != c.want {
			t.Errorf("retry %d attempt %d: %d tries, want %d", c.retry, c.attempt, got, c.want)
		}
	}
	r := RunProperties{Retry: 3}
	if ok, used := r.Trigger([]bool{false, false, true}); !ok || used != 3 {
		t.Errorf("third try passes: %v %d", ok, used)
	}
	if ok, used := (RunProperties{Retry: 2}).Trigger([]bool{false, false, true}); ok || used != 2 {
		t.Errorf("two tries only: %v %d", ok, used)
	}
	if ok, used := r.Trigger([]bool{true, false}); !ok || used != 1 {
		t.Errorf("first try passes: %v %d", ok, used)
	}
	adr := RunProperties{ProbeTimeout: 3 * time.Second, Interval: 5 * time.Second, Retry: 3}
	if w := adr.FailureWindow(); w != 19*time.Second {
		t.Errorf("failure window %v", w)
	}
	if w := (RunProperties{ProbeTimeout: 2 * time.Second}).FailureWindow(); w != 2*time.Second {
		t.Errorf("one try: %v", w)
	}
}

package chaos

import (
	"fmt"
	"time"
)

// How Litmus 3.x runs and judges a probe, as pure functions. Read from
// litmus-go (github.com/litmuschaos/litmus-go, the snapshot read had tags
// up to 3.31.0; pkg/probe and pkg/types/types.go are unchanged since
// 3.29.0, the version pinned):
//   - pkg/probe/probe.go RunProbes: which modes run in which phase;
//     setProbeVerdict and markedVerdictInEnd: how a phase's outcome sets
//     the verdict (Edge), and what stopOnFailure does; getAttempts: how
//     retry and attempt count tries;
//   - pkg/probe/httpprobe.go httpGet, triggerContinuousHTTPProbe,
//     triggerOnChaosHTTPProbe: one trigger is up to Attempts() tries,
//     each bounded by probeTimeout, `interval` apart; Continuous polls
//     every probePollingInterval from pre-chaos until post-chaos and stops
//     at its first failed trigger; OnChaos polls for the chaos duration;
//   - pkg/types/types.go parseProbeTimeouts: every duration in
//     runProperties is a Go duration string ("5s"); empty is zero.
// The modes and runProperties fields are also the CRD's (litmus-helm
// charts/litmus-core/crds/chaosengine_crd.yaml, chart 3.29.0).

// Mode is a probe's mode.
type Mode string

// The modes of Litmus 3.x (the CRD's pattern).
const (
	SOT        Mode = "SOT"        // start of test: once, before the chaos
	EOT        Mode = "EOT"        // end of test: once, after the chaos
	Edge       Mode = "Edge"       // both: before and after
	Continuous Mode = "Continuous" // from before the chaos until after it, polled
	OnChaos    Mode = "OnChaos"    // only while the chaos lasts, polled
)

// Phase is a phase of an experiment.
type Phase string

// The phases, in order.
const (
	PreChaos    Phase = "PreChaos"
	DuringChaos Phase = "DuringChaos"
	PostChaos   Phase = "PostChaos"
)

// Valid reports whether m is one of Litmus's modes.
func (m Mode) Valid() bool {
	switch m {
	case SOT, EOT, Edge, Continuous, OnChaos:
		return true
	}
	return false
}

// Checks reports whether the probe checks the target in phase p. A
// Continuous probe is started in the pre-chaos phase and keeps polling
// through the chaos until the post-chaos phase cancels it; an OnChaos
// probe polls only while the chaos is injected.
func (m Mode) Checks(p Phase) bool {
	switch m {
	case SOT:
		return p == PreChaos
	case EOT:
		return p == PostChaos
	case Edge:
		return p == PreChaos || p == PostChaos
	case Continuous:
		return true
	case OnChaos:
		return p == DuringChaos
	}
	return false
}

// Verdict is a probe's verdict in the ChaosResult.
type Verdict string

// Probe verdicts (chaos-operator's ProbeVerdict values).
const (
	Passed  Verdict = "Passed"
	Failed  Verdict = "Failed"
	Awaited Verdict = "Awaited" // not yet decided
	NA      Verdict = "N/A"     // never run or never judged (the experiment stopped before)
)

// Outcomes are the results of a probe's triggers, phase by phase, in
// order: each true is a trigger that passed (within its tries), each false
// one that failed. A phase the probe did not check is empty.
type Outcomes map[Phase][]bool

// Judgement is what Litmus makes of a probe's outcomes.
type Judgement struct {
	Verdict Verdict
	// StopsExperiment: the failure ends the experiment early (the
	// probe's stopOnFailure): before the chaos (SOT, Edge) the fault is
	// never injected; during it (Continuous, OnChaos) the engine is
	// patched to stop.
	StopsExperiment bool
	// DecidedIn is the phase whose outcome decided the verdict.
	DecidedIn Phase
}

// Judge applies Litmus's rules to a probe's outcomes. Only the phases
// mode checks count (outcomes for others are ignored, as Litmus never
// produces them). A Continuous or OnChaos probe stops polling at its first
// failed trigger, so only a first failure matters; its verdict is set in
// the post-chaos phase. An Edge probe must pass before and after; a
// failure before the chaos stands whatever comes after.
func Judge(mode Mode, stopOnFailure bool, o Outcomes) (Judgement, error) {
	if !mode.Valid() {
		return Judgement{}, fmt.Errorf("probe mode %q is not one of Litmus's", mode)
	}
	failedIn := func(p Phase) bool {
		if !mode.Checks(p) {
			return false
		}
		for _, ok := range o[p] {
			if !ok {
				return true
			}
		}
		return false
	}
	ran := func(p Phase) bool { return mode.Checks(p) && len(o[p]) > 0 }
	fail := func(p Phase) Judgement {
		return Judgement{Verdict: Failed, StopsExperiment: stopOnFailure, DecidedIn: p}
	}
	switch mode {
	case SOT:
		if failedIn(PreChaos) {
			return fail(PreChaos), nil
		}
		if ran(PreChaos) {
			return Judgement{Verdict: Passed, DecidedIn: PreChaos}, nil
		}
		return Judgement{Verdict: NA}, nil
	case EOT:
		if failedIn(PostChaos) {
			return fail(PostChaos), nil
		}
		if ran(PostChaos) {
			return Judgement{Verdict: Passed, DecidedIn: PostChaos}, nil
		}
		return Judgement{Verdict: NA}, nil
	case Edge:
		if failedIn(PreChaos) {
			return fail(PreChaos), nil
		}
		if failedIn(PostChaos) {
			return fail(PostChaos), nil
		}
		if ran(PreChaos) && ran(PostChaos) {
			return Judgement{Verdict: Passed, DecidedIn: PostChaos}, nil
		}
		return Judgement{Verdict: NA}, nil
	default: // Continuous, OnChaos: judged in the post-chaos phase
		for _, p := range []Phase{PreChaos, DuringChaos, PostChaos} {
			if failedIn(p) {
				j := fail(p)
				j.DecidedIn = PostChaos
				return j, nil
			}
		}
		if ran(PreChaos) || ran(DuringChaos) || ran(PostChaos) {
			return Judgement{Verdict: Passed, DecidedIn: PostChaos}, nil
		}
		return Judgement{Verdict: NA}, nil
	}
}

// RunProperties is a probe's runProperties, durations parsed.
type RunProperties struct {
	ProbeTimeout    time.Duration // one try's bound (the HTTP client's timeout)
	Interval        time.Duration // wait between tries of one trigger
	Retry           int           // in 3.x: the number of tries in all (not retries after the first)
	Attempt         int           // the same, preferred when set
	PollingInterval time.Duration // Continuous, OnChaos: wait between triggers
	InitialDelay    time.Duration // wait before the first trigger
	StopOnFailure   bool
}

// Attempts is how many tries one trigger makes: attempt if set, else
// retry, else 1 (litmus-go getAttempts). So retry: 3 means three tries,
// not one and three retries.
func (r RunProperties) Attempts() int {
	switch {
	case r.Attempt == 0 && r.Retry == 0:
		return 1
	case r.Attempt == 0:
		return r.Retry
	default:
		return r.Attempt
	}
}

// Trigger is what one trigger of the probe makes of its tries' results,
// in order: it passes at the first try that passes, within Attempts()
// tries; the tries after it are never made. used is how many were made.
func (r RunProperties) Trigger(tries []bool) (passed bool, used int) {
	for i := 0; i < r.Attempts() && i < len(tries); i++ {
		if tries[i] {
			return true, i + 1
		}
		used = i + 1
	}
	return false, used
}

// FailureWindow is the longest a trigger takes to fail: every try times
// out, with the interval between tries. For a readiness check it is how
// long the target may go unanswered or not-ready before the probe fails.
func (r RunProperties) FailureWindow() time.Duration {
	n := r.Attempts()
	return time.Duration(n)*r.ProbeTimeout + time.Duration(n-1)*r.Interval
}

// Probe is one probe of an experiment.
type Probe struct {
	Name string
	Type string // httpProbe, k8sProbe, promProbe, cmdProbe
	Mode Mode
	Run  RunProperties
	// httpProbe
	URL          string
	Method       string // GET or POST
	Criteria     string // "==", "!=", ...
	ResponseCode string
	// k8sProbe
	Resource      string // group/version/resource, e.g. "v1/pods"
	Namespace     string
	LabelSelector string
	FieldSelector string
	Operation     string // present, absent, create, delete
	// promProbe: the query's first sample compared with Value by
	// Comparator (comparator.criteria; comparator.type float or int)
	Endpoint, Query   string
	Comparator, Value string
}

type probeYAML struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Mode       string `json:"mode"`
	HTTPInputs *struct {
		URL    string `json:"url"`
		Method struct {
			Get *struct {
				Criteria     string `json:"criteria"`
				ResponseCode string `json:"responseCode"`
			} `json:"get"`
			Post *struct {
				Criteria     string `json:"criteria"`
				ResponseCode string `json:"responseCode"`
			} `json:"post"`
		} `json:"method"`
	} `json:"httpProbe/inputs"`
	K8sInputs *struct {
		Group         string `json:"group"`
		Version       string `json:"version"`
		Resource      string `json:"resource"`
		Namespace     string `json:"namespace"`
		LabelSelector string `json:"labelSelector"`
		FieldSelector string `json:"fieldSelector"`
		Operation     string `json:"operation"`
	} `json:"k8sProbe/inputs"`
	PromInputs *struct {
		Endpoint   string `json:"endpoint"`
		Query      string `json:"query"`
		Comparator struct {
			Type     string `json:"type"`
			Criteria string `json:"criteria"`
			Value    string `json:"value"`
		} `json:"comparator"`
	} `json:"promProbe/inputs"`
	RunProperties struct {
		ProbeTimeout         string `json:"probeTimeout"`
		Interval             string `json:"interval"`
		Retry                int    `json:"retry"`
		Attempt              int    `json:"attempt"`
		ProbePollingInterval string `json:"probePollingInterval"`
		InitialDelay         string `json:"initialDelay"`
		StopOnFailure        bool   `json:"stopOnFailure"`
	} `json:"runProperties"`
}

func (p probeYAML) parse() (Probe, error) {
	out := Probe{Name: p.Name, Type: p.Type, Mode: Mode(p.Mode)}
	if p.Name == "" || !out.Mode.Valid() {
		return out, fmt.Errorf("probe %q: a name and one of Litmus's modes are required (mode %q)", p.Name, p.Mode)
	}
	rp := p.RunProperties
	if rp.ProbeTimeout == "" || rp.Interval == "" {
		return out, fmt.Errorf("probe %s: runProperties.probeTimeout and interval are required", p.Name)
	}
	for _, d := range []struct {
		field string
		in    string
		out   *time.Duration
	}{
		{"probeTimeout", rp.ProbeTimeout, &out.Run.ProbeTimeout}, {"interval", rp.Interval, &out.Run.Interval},
		{"probePollingInterval", rp.ProbePollingInterval, &out.Run.PollingInterval}, {"initialDelay", rp.InitialDelay, &out.Run.InitialDelay},
	} {
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil {
			return out, fmt.Errorf("probe %s: runProperties.%s %q is not a duration (Litmus 3.x: \"5s\")", p.Name, d.field, d.in)
		}
		*d.out = v
	}
	out.Run.Retry, out.Run.Attempt, out.Run.StopOnFailure = rp.Retry, rp.Attempt, rp.StopOnFailure
	switch p.Type {
	case "httpProbe":
		in := p.HTTPInputs
		if in == nil || in.URL == "" {
			return out, fmt.Errorf("probe %s: httpProbe/inputs.url is required", p.Name)
		}
		out.URL = in.URL
		switch {
		case in.Method.Get != nil:
			out.Method, out.Criteria, out.ResponseCode = "GET", in.Method.Get.Criteria, in.Method.Get.ResponseCode
		case in.Method.Post != nil:
			out.Method, out.Criteria, out.ResponseCode = "POST", in.Method.Post.Criteria, in.Method.Post.ResponseCode
		default:
			return out, fmt.Errorf("probe %s: httpProbe/inputs.method needs get or post", p.Name)
		}
	case "k8sProbe":
		in := p.K8sInputs
		if in == nil || in.Version == "" || in.Resource == "" || in.Operation == "" {
			return out, fmt.Errorf("probe %s: k8sProbe/inputs needs version, resource and operation", p.Name)
		}
		out.Resource = in.Version + "/" + in.Resource
		if in.Group != "" {
			out.Resource = in.Group + "/" + out.Resource
		}
		out.Namespace, out.LabelSelector, out.FieldSelector, out.Operation = in.Namespace, in.LabelSelector, in.FieldSelector, in.Operation
	case "promProbe":
		if p.PromInputs == nil || p.PromInputs.Endpoint == "" {
			return out, fmt.Errorf("probe %s: promProbe/inputs.endpoint is required", p.Name)
		}
		out.Endpoint, out.Query = p.PromInputs.Endpoint, p.PromInputs.Query
		out.Comparator, out.Value = p.PromInputs.Comparator.Criteria, p.PromInputs.Comparator.Value
	case "cmdProbe", "sloProbe":
	default:
		return out, fmt.Errorf("probe %s: type %q is not one of Litmus's", p.Name, p.Type)
	}
	return out, nil
}

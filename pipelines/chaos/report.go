package chaos

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Experiment verdicts (Litmus's ChaosResult verdicts, plus Error: the
// executor could not run the experiment as declared).
const (
	VerdictPass  = "Pass"
	VerdictFail  = "Fail"
	VerdictError = "Error"
)

// Report is a chaos run.
type Report struct {
	Executor     string // ExecutorDarkTower or ExecutorLitmus
	ExecutorNote string // why that one
	Started      time.Time
	Duration     time.Duration
	Experiments  []ExperimentResult
}

// ExperimentResult is one experiment's outcome.
type ExperimentResult struct {
	Engine, Fault, Target string
	Executor              string
	Overrides             string   // the Duration/Interval knob, when used
	Injected              bool     // the fault was injected at least once
	Injections            []string // what was done, in order
	Probes                []ProbeResult
	Verdict               string // VerdictPass, VerdictFail, VerdictError
	Reason                string
	Duration              time.Duration // from the chaos's start (after the steady-state wait)
	SteadyWait            time.Duration // the wait for the steady state before it
}

// ProbeResult is one probe's verdict.
type ProbeResult struct {
	Name, Type string
	Mode       Mode
	Verdict    Verdict
	Triggers   int    // triggers made
	Tries      int    // tries made, all triggers together
	Detail     string // the first failed trigger: when, after how many tries, why
}

// Failed reports whether any experiment did not pass.
func (r *Report) Failed() bool {
	for _, e := range r.Experiments {
		if e.Verdict != VerdictPass {
			return true
		}
	}
	return false
}

// ExecutorLine is the line every output of the run starts with.
func (r *Report) ExecutorLine() string {
	return fmt.Sprintf("executor: %s (%s)", r.Executor, r.ExecutorNote)
}

func (p ProbeResult) String() string {
	s := fmt.Sprintf("%s[%s %s]=%s", p.Name, p.Type, p.Mode, p.Verdict)
	if p.Triggers > 0 {
		s += fmt.Sprintf(" %dtrig/%dtries", p.Triggers, p.Tries)
	}
	return s
}

func probesText(ps []ProbeResult) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}

// Table writes one row per experiment, under the executor's line.
func (r *Report) Table(w io.Writer) {
	fmt.Fprintln(w, r.ExecutorLine())
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENGINE\tFAULT\tTARGET\tPROBES\tVERDICT\tSTEADY\tDURATION\tREASON")
	for _, e := range r.Experiments {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Engine, e.Fault, e.Target, probesText(e.Probes), e.Verdict, e.SteadyWait.Round(100*time.Millisecond), e.Duration.Round(100*time.Millisecond), e.Reason)
	}
	tw.Flush()
	for _, e := range r.Experiments {
		if e.Overrides != "" {
			fmt.Fprintf(w, "%s: %s\n", e.Engine, e.Overrides)
		}
	}
	fmt.Fprintf(w, "%d experiment(s), %d failed, in %s\n", len(r.Experiments), r.failures(), r.Duration.Round(100*time.Millisecond))
}

func (r *Report) failures() int {
	n := 0
	for _, e := range r.Experiments {
		if e.Verdict != VerdictPass {
			n++
		}
	}
	return n
}

// Markdown is the run's section of the CI summary (summary.md).
func (r *Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "## Chaos\n\n%s. %d experiment(s), %d failed, in %s.\n\n", r.ExecutorLine(), len(r.Experiments), r.failures(), r.Duration.Round(time.Second))
	fmt.Fprintln(w, "| engine | fault | target | probes | verdict | steady after | duration | reason |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	esc := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }
	for _, e := range r.Experiments {
		mark := "✅"
		if e.Verdict != VerdictPass {
			mark = "❌"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s | %s | %s %s | %s | %s | %s |\n", e.Engine, e.Fault, esc(e.Target), esc(probesText(e.Probes)), mark, e.Verdict, e.SteadyWait.Round(100*time.Millisecond), e.Duration.Round(100*time.Millisecond), esc(e.Reason))
	}
	for _, e := range r.Experiments {
		if e.Overrides != "" {
			fmt.Fprintf(w, "\n`%s`: %s", e.Engine, e.Overrides)
		}
	}
	fmt.Fprintln(w)
}

type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr"`
	Properties []junitProperty `xml:"properties>property"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	Error     *junitFailure `xml:"error,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// JUnit writes the run as JUnit XML: one testcase per experiment, a
// failure (verdict Fail) or an error (Error) carrying the reason.
func (r *Report) JUnit(w io.Writer) error {
	s := junitSuite{Name: "chaos", Tests: len(r.Experiments), Time: secs(r.Duration), Timestamp: r.Started.UTC().Format(time.RFC3339),
		Properties: []junitProperty{{Name: "executor", Value: r.ExecutorLine()}}}
	for _, e := range r.Experiments {
		c := junitCase{Name: e.Engine, Classname: "chaos." + e.Fault, Time: secs(e.Duration),
			SystemOut: fmt.Sprintf("%s\ntarget: %s\nprobes: %s\ninjections: %s\n%s", r.ExecutorLine(), e.Target, probesText(e.Probes), strings.Join(e.Injections, "; "), e.Overrides)}
		switch e.Verdict {
		case VerdictPass:
		case VerdictError:
			s.Errors++
			c.Error = &junitFailure{Message: e.Reason, Type: e.Verdict, Text: e.Reason}
		default:
			s.Failures++
			c.Failure = &junitFailure{Message: e.Reason, Type: e.Verdict, Text: e.Reason}
		}
		s.Cases = append(s.Cases, c)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(junitSuites{Suites: []junitSuite{s}}); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

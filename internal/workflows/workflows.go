// Package workflows checks the GitHub Actions workflows: actionlint's
// rules, and the shape the delivery platform keeps them in — every step
// that does work is a `dagger call` (so a laptop and Actions run the same
// thing), the others only check out, upload artifacts or SARIF, or append
// to the job summary; least-privilege permissions per job; a concurrency
// group; actions pinned to released versions; the Dagger CLI at the
// engine version dagger.json pins. The jobs named in HostCLIJobs run the
// repository's own CLI on the runner instead, each for its stated reason.
package workflows

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/rhysd/actionlint"
)

// Problem is one finding in one workflow file.
type Problem struct {
	File    string
	Line    int
	Message string
}

func (p Problem) String() string { return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Message) }

// Actions a step may use, and what for.
var allowedActions = map[string]string{
	"actions/checkout":                  "check out",
	"dagger/dagger-for-github":          "run a dagger call",
	"actions/upload-artifact":           "upload artifacts",
	"github/codeql-action/upload-sarif": "upload SARIF to code scanning",
}

const daggerAction = "dagger/dagger-for-github"

// HostCLIJobs may run the repository's CLI on the runner (`go run . …`,
// with actions/setup-go) instead of a `dagger call`, each for the reason
// given: the same CLI a laptop runs without Dagger, so a laptop and
// Actions still run the same thing.
var HostCLIJobs = map[string]string{
	"cluster-checks": "its kind cluster's API server, published on the runner's 127.0.0.1, cannot be reached from a Dagger container yet (docs/dagger.md)",
}

// ghExpr is a plain context value, e.g. ${{ github.event.pull_request.number }}.
var ghExpr = regexp.MustCompile(`\$\{\{ github\.[a-z_.]+ \}\}`)

// cliRun is the command a HostCLIJobs run step may have: the repository's CLI.
var cliRun = regexp.MustCompile(`^go run \. [a-z][a-z-]*( [^;&|<>$` + "`" + `]*)?$`)

// releasedRef is a release tag (v8, v8.4, v8.4.1) or a full commit SHA.
var releasedRef = regexp.MustCompile(`^(v[0-9]+(\.[0-9]+){0,2}|[0-9a-f]{40})$`)

// summaryRun is the one command a run step may have: appending a report
// the pipeline wrote to the job summary.
var summaryRun = regexp.MustCompile(`^cat [A-Za-z0-9_./-]+ >> "\$GITHUB_STEP_SUMMARY"$`)

// Files lists the workflow files in dir.
func Files(dir string) ([]string, error) {
	var files []string
	for _, pattern := range []string{"*.yml", "*.yaml"} {
		m, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("no workflow files in %s", dir)
	}
	return files, nil
}

// Lint runs actionlint on every workflow in dir (with shellcheck on run:
// scripts when it is installed).
func Lint(dir string) ([]Problem, error) {
	files, err := Files(dir)
	if err != nil {
		return nil, err
	}
	opts := &actionlint.LinterOptions{}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		opts.Shellcheck = sc
	}
	l, err := actionlint.NewLinter(io.Discard, opts)
	if err != nil {
		return nil, err
	}
	errs, err := l.LintFiles(files, nil)
	if err != nil {
		return nil, err
	}
	var problems []Problem
	for _, e := range errs {
		problems = append(problems, Problem{File: e.Filepath, Line: e.Line, Message: e.Message + " [" + e.Kind + "]"})
	}
	return problems, nil
}

// CheckShape checks every workflow in dir against the platform's rules;
// daggerVersion is the engine version (v0.21.7) the Dagger steps must run.
func CheckShape(dir, daggerVersion string) ([]Problem, error) {
	files, err := Files(dir)
	if err != nil {
		return nil, err
	}
	var problems []Problem
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		w, errs := actionlint.Parse(raw)
		if len(errs) > 0 {
			for _, e := range errs {
				problems = append(problems, Problem{File: f, Line: e.Line, Message: e.Message})
			}
			continue
		}
		problems = append(problems, shape(f, w, strings.TrimPrefix(daggerVersion, "v"))...)
	}
	return problems, nil
}

func shape(file string, w *actionlint.Workflow, daggerVersion string) []Problem {
	var problems []Problem
	add := func(pos *actionlint.Pos, f string, a ...any) {
		line := 1
		if pos != nil {
			line = pos.Line
		}
		problems = append(problems, Problem{File: file, Line: line, Message: fmt.Sprintf(f, a...)})
	}
	if w.Permissions == nil || w.Permissions.All != nil || len(w.Permissions.Scopes) > 0 {
		add(nil, "the workflow must set `permissions: {}` and grant each job only what it needs")
	}
	if w.Concurrency == nil || w.Concurrency.Group == nil || w.Concurrency.Group.Value == "" {
		add(nil, "the workflow has no concurrency group (two runs for the same PR or tag would race)")
	}
	ids := make([]string, 0, len(w.Jobs))
	for id := range w.Jobs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		job := w.Jobs[id]
		if job.Permissions == nil {
			add(job.Pos, "job %s declares no permissions: list the scopes it needs (least privilege)", id)
		} else if job.Permissions.All != nil {
			add(job.Permissions.Pos, "job %s grants %s permissions: list only the scopes it needs", id, job.Permissions.All.Value)
		}
		dagger := 0
		_, hostCLI := HostCLIJobs[id]
		for i, step := range job.Steps {
			name := fmt.Sprintf("job %s, step %d", id, i+1)
			if step.Name != nil {
				name += " (" + step.Name.Value + ")"
			}
			switch exec := step.Exec.(type) {
			case *actionlint.ExecRun:
				if hostCLI && exec.Run != nil && cliRun.MatchString(ghExpr.ReplaceAllString(strings.Join(strings.Fields(exec.Run.Value), " "), "X")) {
					dagger++ // the CLI the Dagger functions wrap
					continue
				}
				if exec.Run == nil || !summaryRun.MatchString(strings.TrimSpace(exec.Run.Value)) {
					add(step.Pos, "%s runs a command: work belongs in a `dagger call` (a run step may only append a report to $GITHUB_STEP_SUMMARY)", name)
				}
			case *actionlint.ExecAction:
				uses := ""
				if exec.Uses != nil {
					uses = exec.Uses.Value
				}
				action, ref, _ := strings.Cut(uses, "@")
				if _, ok := allowedActions[action]; !ok && (!hostCLI || action != "actions/setup-go") {
					add(step.Pos, "%s uses %s: steps may only %s", name, uses, allowedList())
					continue
				}
				if !releasedRef.MatchString(ref) {
					add(step.Pos, "%s uses %s: pin a released version (vN, vN.N.N or a published commit SHA)", name, uses)
				}
				if action == daggerAction {
					dagger++
					problems = append(problems, daggerStep(file, name, step, exec, daggerVersion)...)
				}
			}
		}
		if dagger == 0 {
			add(job.Pos, "job %s makes no `dagger call`", id)
		}
	}
	return problems
}

func daggerStep(file, name string, step *actionlint.Step, exec *actionlint.ExecAction, version string) []Problem {
	var problems []Problem
	input := func(key string) string {
		if in, ok := exec.Inputs[key]; ok && in.Value != nil {
			return strings.TrimSpace(in.Value.Value)
		}
		return ""
	}
	if v := strings.TrimPrefix(input("version"), "v"); v != version {
		problems = append(problems, Problem{file, step.Pos.Line, fmt.Sprintf("%s runs Dagger %q: pin version %q, the engine dagger.json names", name, input("version"), version)})
	}
	if verb := input("verb"); verb != "" && verb != "call" {
		problems = append(problems, Problem{file, step.Pos.Line, fmt.Sprintf("%s uses verb %q: the pipeline's steps are `dagger call`s", name, verb)})
	}
	if input("args") == "" && input("call") == "" {
		problems = append(problems, Problem{file, step.Pos.Line, fmt.Sprintf("%s calls no function (with.args is empty)", name)})
	}
	if input("module") != "" {
		problems = append(problems, Problem{file, step.Pos.Line, fmt.Sprintf("%s calls another module: call this repository's (dagger.json)", name)})
	}
	return problems
}

func allowedList() string {
	var what []string
	for _, a := range []string{"actions/checkout", "dagger/dagger-for-github", "actions/upload-artifact", "github/codeql-action/upload-sarif"} {
		what = append(what, allowedActions[a]+" ("+a+")")
	}
	return strings.Join(what, ", ") + ", or append to the job summary"
}

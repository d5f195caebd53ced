package flow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/format"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/darktower/delivery/internal/cmdrun"
	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/chaos"
	"github.com/darktower/delivery/pipelines/scan"
)

// CIResultFile is where PR records its checks, next to the build's
// outputs: the job uploads the directory and then reads the verdict.
const CIResultFile = "ci.json"

// DockerTests need a Docker engine and CLI; make test runs them (it starts
// dockerd), the Dagger ci function, which has no Docker-in-Docker, skips
// them by these names.
var DockerTests = []string{"TestBuiltImagesRunInDocker", "TestBuildAllLoadFailuresNameTheFix"}

// PROptions are the PR check's inputs.
type PROptions struct {
	Modules   []string // Go modules to format-check, vet and test, relative to Root (the build-all options' Root)
	SkipTests []string // test names go test -skip leaves out
	// Cluster, when set, adds the cluster checks after build-all: the
	// build deployed into the pull request's preview cluster (created for
	// the check), then the chaos stage against it.
	Cluster *ClusterChecks
	BuildAllOptions
}

// ClusterChecks are the inputs of the PR check's cluster stages.
type ClusterChecks struct {
	PR        int    // the pull request: its cluster is preview.Name(PR)
	Commit    string // the commit built (default: the build's revision)
	Keep      bool   // leave the cluster up afterwards (default: delete it)
	StateDir  string // kindcluster's state directory
	NodeImage string // kindcluster's node image choice (default auto)
	CacheDir  string // components built from the Go module proxy
	// The chaos stage's options (chaos.StageOptions).
	Only               []string
	Executor           string
	InstallLitmus      bool
	Duration, Interval time.Duration
}

// Check is one step of the PR check.
type Check struct {
	Name    string  `json:"name"`
	Passed  bool    `json:"passed"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
	// Blocked: the failure is the vulnerability gate's refusal (the
	// build itself worked and its reports were written).
	Blocked bool `json:"blocked,omitempty"`
	// Skipped: not run because a step it needs failed (Error says which);
	// it does not count as a failure of its own.
	Skipped bool `json:"skipped,omitempty"`
}

// CIResult is what the PR check records in CIResultFile.
type CIResult struct {
	Passed bool    `json:"passed"`
	Checks []Check `json:"checks"`
	// Chaos: the chaos stage's report, when it ran (its JUnit and
	// summary.md section are the files that record it).
	Chaos *chaos.Report `json:"-"`
}

// PR runs the pull-request check: gofmt, go vet and go test of every
// module, then build-all (which includes the vulnerability gate). Every
// step runs even when one before it failed, so one run reports every
// problem; the result is written to Out/ci.json and appended to
// summary.md, and the error names the failed steps.
func PR(ctx context.Context, o PROptions) (*CIResult, error) {
	say := func(f string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, f+"\n", a...)
		}
	}
	res := &CIResult{Passed: true}
	run := func(name string, step func() error) {
		say("ci: %s", name)
		start := time.Now()
		err := step()
		c := Check{Name: name, Passed: err == nil, Seconds: time.Since(start).Round(time.Millisecond).Seconds()}
		if err != nil {
			c.Error = err.Error()
			c.Blocked = errors.As(err, new(*scan.BlockedError))
			res.Passed = false
			say("ci: %s FAILED: %v", name, err)
		}
		res.Checks = append(res.Checks, c)
	}
	run("gofmt", func() error { return unformatted(o.Root) })
	for _, m := range o.Modules {
		dir := filepath.Join(o.Root, m)
		run("go vet ("+m+")", func() error { return goTool(ctx, dir, o.Progress, "vet", "./...") })
		args := []string{"test", "-count=1", "./..."}
		if len(o.SkipTests) > 0 {
			args = append(args, "-skip", "^("+strings.Join(o.SkipTests, "|")+")$")
		}
		run("go test ("+m+")", func() error { return goTool(ctx, dir, o.Progress, args...) })
	}
	var built *build.Manifest
	run("build-all", func() (err error) { built, err = BuildAll(ctx, o.BuildAllOptions); return err })
	if o.Cluster != nil {
		clusterChecks(ctx, o, built, res, run)
	}
	if err := writeCIResult(o.Out, res); err != nil {
		return nil, err
	}
	return res, res.Err()
}

// RecordVerdict writes the outcome of one command (build-all) to
// out/ci.json as a one-check result, whatever it was, so that a caller
// that keeps the outputs of a failed run (the Dagger functions, which
// return the reports also when the gate blocks) can read the verdict
// with ci-verdict.
func RecordVerdict(out, name string, took time.Duration, err error) error {
	c := Check{Name: name, Passed: err == nil, Seconds: took.Round(time.Millisecond).Seconds()}
	if err != nil {
		c.Error = err.Error()
		c.Blocked = errors.As(err, new(*scan.BlockedError))
	}
	return writeCIResult(out, &CIResult{Passed: err == nil, Checks: []Check{c}})
}

// Err names the failed checks (nil when all passed).
func (r *CIResult) Err() error {
	var failed []string
	for _, c := range r.Checks {
		if !c.Passed && !c.Skipped {
			failed = append(failed, c.Name)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("ci: %d check(s) failed: %s", len(failed), strings.Join(failed, ", "))
}

// ReadCIResult reads the result a PR check wrote into out.
func ReadCIResult(out string) (*CIResult, error) {
	raw, err := os.ReadFile(filepath.Join(out, CIResultFile))
	if err != nil {
		return nil, fmt.Errorf("%w (the ci check writes it; is --out the directory it wrote?)", err)
	}
	var r CIResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(out, CIResultFile), err)
	}
	if len(r.Checks) == 0 {
		return nil, fmt.Errorf("%s records no checks", filepath.Join(out, CIResultFile))
	}
	return &r, nil
}

func writeCIResult(out string, r *CIResult) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, CIResultFile), append(data, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	md.WriteString("\n## Checks\n\n| check | result | seconds |\n|---|---|---|\n")
	for _, c := range r.Checks {
		result := "passed"
		switch {
		case c.Skipped:
			result = "skipped (" + c.Error + ")"
		case !c.Passed:
			result = "**FAILED**"
		}
		fmt.Fprintf(&md, "| %s | %s | %.1f |\n", c.Name, result, c.Seconds)
	}
	f, err := os.OpenFile(filepath.Join(out, build.SummaryFile), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(md.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// unformatted fails naming every Go file gofmt would change under root
// (nested modules included; dot and underscore directories, testdata and
// vendor skipped, as the go command does).
func unformatted(root string) error {
	var bad []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		formatted, err := format.Source(src)
		if err != nil || !bytes.Equal(src, formatted) {
			rel, _ := filepath.Rel(root, path)
			bad = append(bad, rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("gofmt would change %s (run gofmt -w on them)", strings.Join(bad, ", "))
	}
	return nil
}

// goTool runs the go command in dir, its output to progress; the error
// keeps the output's last lines, where go vet and go test say what failed.
func goTool(ctx context.Context, dir string, progress io.Writer, args ...string) error {
	_, err := cmdrun.Cmd{Dir: dir, Progress: progress, TailLines: 15}.Run(ctx, "go", args...)
	return err
}

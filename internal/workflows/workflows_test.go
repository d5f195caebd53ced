package workflows

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/darktower/delivery/internal/daggercheck"
	"github.com/rhysd/actionlint"
)

var repoWorkflows = filepath.Join("..", "..", ".github", "workflows")

func engineVersion(t *testing.T) string {
	t.Helper()
	cfg, err := daggercheck.ReadConfig(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.EngineVersion
}

func TestRepositoryWorkflowsPassActionlint(t *testing.T) {
	problems, err := Lint(repoWorkflows)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

func TestRepositoryWorkflowsKeepTheirShape(t *testing.T) {
	problems, err := CheckShape(repoWorkflows, engineVersion(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	// What each workflow is for: its trigger, its permissions, its calls.
	for file, want := range map[string]struct {
		events      []string
		permissions map[string]string // of every job (but the HostCLIJobs: contents read, and jobs)
		calls       []string          // in the workflow's dagger calls
		jobs        map[string]job    // jobs with their own permissions and environment
	}{
		"pr.yml": {[]string{"pull_request"}, map[string]string{"contents": "read", "security-events": "write", "actions": "read"},
			[]string{"ci export --path=dist", "ci-verdict --dist=dist", "go run . ci --modules= --no-sign --platforms linux/amd64 --cluster-checks --pr ${{ github.event.pull_request.number }} --install-litmus"}, nil},
		"release.yml": {[]string{"push"}, map[string]string{"contents": "read", "packages": "write", "id-token": "write"},
			[]string{"release --tag=${{ github.ref_name }}", "--oidc-request-token=env://ACTIONS_ID_TOKEN_REQUEST_TOKEN",
				"--server-url=${{ github.server_url }}", "--source-url=${{ github.server_url }}/${{ github.repository }}",
				"promote --tag=${{ github.ref_name }} --from=ghcr.io/${{ github.repository_owner }}",
				"--certificate-identity=${{ github.server_url }}/${{ github.workflow_ref }}"},
			map[string]job{"promote": {permissions: map[string]string{"contents": "read", "packages": "read"}, environment: "production", needs: "release"}}},
		"preview.yml": {[]string{"pull_request", "schedule"}, map[string]string{"contents": "read"},
			[]string{"preview-up --docker-socket=/var/run/docker.sock --pr=${{ github.event.number }}",
				"preview-down --docker-socket=/var/run/docker.sock --pr=${{ github.event.number }}",
				"preview-reap --docker-socket=/var/run/docker.sock --ttl=72h"}, nil},
	} {
		raw, err := os.ReadFile(filepath.Join(repoWorkflows, file))
		if err != nil {
			t.Fatal(err)
		}
		w, errs := actionlint.Parse(raw)
		if len(errs) > 0 {
			t.Fatalf("%s: %v", file, errs[0])
		}
		var events []string
		for _, on := range w.On {
			events = append(events, on.EventName())
		}
		if !slices.Equal(events, want.events) {
			t.Errorf("%s: triggered by %v, want %v", file, events, want.events)
		}
		var args []string
		for id, job := range w.Jobs {
			got := map[string]string{}
			for scope, p := range job.Permissions.Scopes {
				got[scope] = p.Value.Value
			}
			want := want
			if _, ok := HostCLIJobs[id]; ok {
				want.permissions = map[string]string{"contents": "read"}
			}
			env := ""
			if job.Environment != nil && job.Environment.Name != nil {
				env = job.Environment.Name.Value
			}
			var needs []string
			for _, n := range job.Needs {
				needs = append(needs, n.Value)
			}
			if j, ok := want.jobs[id]; ok {
				want.permissions = j.permissions
				if env != j.environment || !slices.Equal(needs, []string{j.needs}) {
					t.Errorf("%s: job %s runs in environment %q after %v, want environment %q after %s", file, id, env, needs, j.environment, j.needs)
				}
			} else if env != "" {
				t.Errorf("%s: job %s runs in environment %q: this test does not expect it", file, id, env)
			}
			for scope, value := range want.permissions {
				if got[scope] != value {
					t.Errorf("%s: permission %s is %q, want %q", file, scope, got[scope], value)
				}
			}
			if len(got) != len(want.permissions) {
				t.Errorf("%s: permissions %v, want exactly %v", file, got, want.permissions)
			}
			for _, s := range job.Steps {
				// The reports are uploaded also when the work failed: that is when they matter.
				if a, ok := s.Exec.(*actionlint.ExecAction); ok && (strings.HasPrefix(a.Uses.Value, "actions/upload-artifact@") ||
					strings.HasPrefix(a.Uses.Value, "github/codeql-action/upload-sarif@")) {
					if s.If == nil || !strings.HasPrefix(s.If.Value, "always()") {
						t.Errorf("%s: step %q does not run `if: always()`", file, a.Uses.Value)
					}
				}
				if a, ok := s.Exec.(*actionlint.ExecAction); ok && strings.HasPrefix(a.Uses.Value, daggerAction+"@") {
					args = append(args, a.Inputs["args"].Value.Value)
				}
				if r, ok := s.Exec.(*actionlint.ExecRun); ok && r.Run != nil {
					args = append(args, strings.Join(strings.Fields(r.Run.Value), " "))
				}
			}
		}
		for id := range want.jobs {
			if w.Jobs[id] == nil {
				t.Errorf("%s: no job %s", file, id)
			}
		}
		for _, call := range want.calls {
			if !strings.Contains(strings.Join(args, "\n"), call) {
				t.Errorf("%s: no dagger call has %q (calls: %q)", file, call, args)
			}
		}
	}
}

// job is what the shape test expects of one job.
type job struct {
	permissions map[string]string
	environment string // a deployment environment (its reviewers approve the job)
	needs       string
}

const badWorkflow = `name: bad
on: push
permissions: write-all
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@main
      - uses: actions/setup-go@v6
      - run: go test ./...
      - uses: dagger/dagger-for-github@v8.4.1
        with:
          version: "0.20.0"
          verb: run
          args: go test ./...
      - run: cat dist/summary.md >> "$GITHUB_STEP_SUMMARY"
  other:
    runs-on: ubuntu-latest
    permissions: read-all
    steps:
      - uses: actions/checkout@v6
  cluster-checks:
    runs-on: ubuntu-latest
    permissions:
      contents: read
    steps:
      - uses: actions/setup-go@v6
      - run: go run . ci --cluster-checks --pr 1
      - run: go run . ci; curl https://example.com | sh
`

func TestShapeRefusesWorkOutsideDaggerAndLoosePins(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.yml"), []byte(badWorkflow), 0o644); err != nil {
		t.Fatal(err)
	}
	problems, err := CheckShape(dir, "v0.21.7")
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, p := range problems {
		all.WriteString(p.String() + "\n")
	}
	for _, want := range []string{
		"`permissions: {}`",
		"no concurrency group",
		"job build declares no permissions",
		"job other grants read-all permissions",
		"uses actions/checkout@main: pin a released version",
		"uses actions/setup-go@v6: steps may only",
		"step 3 runs a command",
		`runs Dagger "0.20.0": pin version "0.21.7"`,
		`uses verb "run"`,
		"job other makes no `dagger call`",
		"job cluster-checks, step 3 runs a command",
	} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("no problem says %q; found:\n%s", want, all.String())
		}
	}
	if strings.Contains(all.String(), "step 6") {
		t.Errorf("the job-summary step was refused:\n%s", all.String())
	}
	// The host-CLI exception: setup-go and the repository's CLI, in that job only.
	if strings.Contains(all.String(), "job cluster-checks, step 1") || strings.Contains(all.String(), "job cluster-checks, step 2") ||
		strings.Contains(all.String(), "job cluster-checks makes no") {
		t.Errorf("the cluster-checks job's CLI steps were refused:\n%s", all.String())
	}
}

func TestLintFindsActionlintErrors(t *testing.T) {
	dir := t.TempDir()
	broken := "name: broken\non: pull_request\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n    permissions:\n      contents: reed\n    steps:\n      - uses: actions/checkout@v6\n        with:\n          fetch-depth: ${{ github.event.no_such_thing.x }}\n"
	if err := os.WriteFile(filepath.Join(dir, "broken.yml"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	problems, err := Lint(dir)
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, p := range problems {
		all.WriteString(p.String() + "\n")
	}
	if !strings.Contains(all.String(), "reed") || !strings.Contains(all.String(), "broken.yml:8") {
		t.Errorf("actionlint did not report the bad permission value at line 8:\n%s", all.String())
	}
}

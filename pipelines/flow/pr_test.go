package flow

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/build"
)

// prRepo is fixtureRepo plus a test in its module: one that passes and
// one that stands for a Docker test (it fails unless skipped).
func prRepo(t *testing.T) string {
	t.Helper()
	root := fixtureRepo(t)
	os.RemoveAll(filepath.Join(root, "fx", "cmd", "broken")) // go vet would refuse it
	write(t, root, "fx/cmd/ok/main_test.go", "package main\n\nimport \"testing\"\n\nfunc TestPasses(t *testing.T) {}\n\nfunc TestNeedsDocker(t *testing.T) { t.Fatal(\"no Docker here\") }\n")
	return root
}

func write(t *testing.T, root, name, body string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func prOptions(root string) PROptions {
	return PROptions{Modules: []string{"fx"}, SkipTests: []string{"TestNeedsDocker"}, BuildAllOptions: BuildAllOptions{Root: root, Services: []string{"ok"},
		Out: filepath.Join(root, "dist"), Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys}}
}

func TestPRPassesAndRecordsEveryCheck(t *testing.T) {
	root := prRepo(t)
	var progress strings.Builder
	o := prOptions(root)
	o.Progress = &progress
	res, err := PR(context.Background(), o)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	got, err := ReadCIResult(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range got.Checks {
		names = append(names, c.Name)
	}
	if want := "gofmt,go vet (fx),go test (fx),build-all"; strings.Join(names, ",") != want || !got.Passed || !res.Passed {
		t.Errorf("checks %v passed %v, want %s all passed", names, got.Passed, want)
	}
	if !strings.Contains(progress.String(), "ok  \texample.com/fx/cmd/ok") {
		t.Errorf("go test's output is not in the progress:\n%s", progress.String())
	}
	summary, _ := os.ReadFile(filepath.Join(o.Out, build.SummaryFile))
	if !strings.Contains(string(summary), "| go test (fx) | passed |") || !strings.Contains(string(summary), "# Dark Tower build 1.0.0") {
		t.Errorf("summary.md lacks the build or the checks:\n%s", summary)
	}
	if _, err := os.Stat(filepath.Join(o.Out, build.ManifestFile)); err != nil {
		t.Errorf("build-all's manifest is missing: %v", err)
	}
}

func TestPRRunsEveryCheckAndNamesEachFailure(t *testing.T) {
	root := prRepo(t)
	write(t, root, "fx/cmd/ok/ugly.go", "package main\nfunc  ugly( ) {}\n")
	write(t, root, "fx/cmd/ok/fail_test.go", "package main\n\nimport \"testing\"\n\nfunc TestFails(t *testing.T) { t.Fatal(\"a real failure\") }\n")
	o := prOptions(root)
	o.Services = []string{"nope"}
	// The cluster checks need the build: skipped, saying so, and not
	// counted as failures of their own.
	o.Cluster = &ClusterChecks{PR: 7}
	_, err := PR(context.Background(), o)
	if err == nil {
		t.Fatal("PR passed with an unformatted file, a failing test and an unknown service")
	}
	if want := "3 check(s) failed: gofmt, go test (fx), build-all"; !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
	got, err := ReadCIResult(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range got.Checks {
		switch c.Name {
		case "gofmt":
			if !strings.Contains(c.Error, filepath.Join("fx", "cmd", "ok", "ugly.go")) {
				t.Errorf("gofmt error %q does not name the file", c.Error)
			}
		case "go test (fx)":
			if !strings.Contains(c.Error, "a real failure") || strings.Contains(c.Error, "no Docker here") {
				t.Errorf("go test error %q: want the failing test's message, and the skipped test not run", c.Error)
			}
		case "go vet (fx)":
			if !c.Passed {
				t.Errorf("go vet failed: %s", c.Error)
			}
		case "build-all":
			if !strings.Contains(c.Error, `unknown service "nope"`) {
				t.Errorf("build-all error %q", c.Error)
			}
		case "cluster + deploy", "chaos":
			if !c.Skipped || c.Passed || c.Error != "build-all failed" {
				t.Errorf("%s after a failed build: %+v", c.Name, c)
			}
		}
	}
	if n := len(got.Checks); got.Checks[n-2].Name != "cluster + deploy" || got.Checks[n-1].Name != "chaos" {
		t.Errorf("the cluster checks are not the last two: %+v", got.Checks)
	}
	summary, err := os.ReadFile(filepath.Join(o.Out, "summary.md"))
	if err != nil || !strings.Contains(string(summary), "| chaos | skipped (build-all failed) |") {
		t.Errorf("summary.md: %v\n%s", err, summary)
	}
	if got.Passed || got.Err() == nil {
		t.Error("ci.json says passed")
	}
	if _, err := ReadCIResult(t.TempDir()); err == nil || !strings.Contains(err.Error(), "the ci check writes it") {
		t.Errorf("missing ci.json: err = %v", err)
	}
}

// DockerTests is matched by name: a renamed Docker test would silently run
// (and fail) in the Dagger ci function.
func TestDockerTestsNameRealTests(t *testing.T) {
	files, _ := filepath.Glob("*_test.go")
	var src strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	for _, name := range DockerTests {
		if !strings.Contains(src.String(), "func "+name+"(t *testing.T)") {
			t.Errorf("DockerTests names %s, which is not a test in pipelines/flow", name)
		}
	}
}

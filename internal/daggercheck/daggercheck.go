// Package daggercheck compile-checks the Dagger module without a Dagger
// engine (make dagger-check): it builds the Dagger codegen pinned in
// tools/dagger-codegen (the engine's version), wraps the core schema
// snapshot shipped in that module as the introspection result, generates
// the module's bindings with it, and runs go build, go vet and go test in
// the module.
package daggercheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/darktower/delivery/internal/cmdrun"
	"golang.org/x/mod/modfile"
)

const (
	// ToolsDir is the throwaway module pinning the codegen.
	ToolsDir   = "tools/dagger-codegen"
	daggerPath = "github.com/dagger/dagger"
	// The schema snapshot inside that module.
	schemaSnapshot = "cmd/codegen/introspection/testdata/schema.json"
)

// testOnlyBindings are generated from modules the snapshot schema happens
// to contain (the codegen's own test fixtures). A real engine does not
// generate them; they are removed before building, so nothing in the
// module can come to depend on them.
var testOnlyBindings = []string{"sub-1.gen.go", "sub-2.gen.go", "test.gen.go"}

// Options say where the repository is and where to keep the built codegen.
type Options struct {
	Root     string
	CacheDir string
	Progress io.Writer
}

// Config is dagger.json.
type Config struct {
	Name          string `json:"name"`
	EngineVersion string `json:"engineVersion"`
	SDK           struct {
		Source string `json:"source"`
	} `json:"sdk"`
	Source string `json:"source"`
}

// Run performs the check; the error names the failing step and keeps the
// compiler's or vet's own words.
func Run(ctx context.Context, o Options) error {
	say := func(f string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "dagger-check: "+f+"\n", a...)
		}
	}
	cfg, err := ReadConfig(o.Root)
	if err != nil {
		return err
	}
	tools := filepath.Join(o.Root, ToolsDir)
	version, err := codegenVersion(tools)
	if err != nil {
		return err
	}
	if cfg.EngineVersion != version {
		return fmt.Errorf("dagger.json pins engine %s but %s builds the codegen of %s: keep them the same version", cfg.EngineVersion, filepath.Join(ToolsDir, "go.mod"), version)
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return err
	}
	codegen := filepath.Join(o.CacheDir, "codegen-"+version)
	say("building the Dagger codegen %s", version)
	if _, err := run(ctx, tools, "go", "build", "-o", codegen, daggerPath+"/cmd/codegen"); err != nil {
		return err
	}
	schema, err := wrapSchema(ctx, tools, o.CacheDir, version)
	if err != nil {
		return err
	}
	mod := filepath.Join(o.Root, cfg.Source)
	before, err := readModFiles(mod)
	if err != nil {
		return err
	}
	say("generating %s's bindings from the %s schema snapshot", cfg.Source, version)
	if _, err := run(ctx, mod, codegen, "generate-module", "--lang", "go", "--module-name", cfg.Name, "--module-source-path", ".",
		"--introspection-json-path", schema, "--lib-version", version, "-o", "."); err != nil {
		return err
	}
	after, err := readModFiles(mod)
	if err != nil {
		return err
	}
	if !bytes.Equal(before, after) {
		return fmt.Errorf("the codegen changed %s/go.mod or go.sum (as `dagger develop` would): review and commit them", cfg.Source)
	}
	for _, f := range testOnlyBindings {
		if err := os.Remove(filepath.Join(mod, "internal", "dagger", f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	for _, step := range [][]string{{"build", "./..."}, {"vet", "./..."}, {"test", "-count=1", "./..."}} {
		say("go %s in %s", strings.Join(step, " "), cfg.Source)
		if _, err := run(ctx, mod, "go", step...); err != nil {
			return err
		}
	}
	say("ok: %s generates, builds, vets and passes its tests against Dagger %s", cfg.Source, version)
	return nil
}

// ReadConfig reads and checks dagger.json.
func ReadConfig(root string) (*Config, error) {
	path := filepath.Join(root, "dagger.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var problems []string
	if cfg.Name == "" {
		problems = append(problems, "no name")
	}
	if cfg.SDK.Source != "go" {
		problems = append(problems, fmt.Sprintf(`sdk.source is %q, not "go"`, cfg.SDK.Source))
	}
	if cfg.Source == "" || filepath.IsAbs(cfg.Source) || strings.HasPrefix(filepath.Clean(cfg.Source), "..") {
		problems = append(problems, fmt.Sprintf("source %q is not a directory inside the repository", cfg.Source))
	} else if _, err := os.Stat(filepath.Join(root, cfg.Source, "go.mod")); err != nil {
		problems = append(problems, fmt.Sprintf("source %q has no go.mod", cfg.Source))
	}
	if !strings.HasPrefix(cfg.EngineVersion, "v") {
		problems = append(problems, fmt.Sprintf("engineVersion %q is not a pinned version like v0.21.7", cfg.EngineVersion))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s: %s", path, strings.Join(problems, "; "))
	}
	return &cfg, nil
}

// codegenVersion is the github.com/dagger/dagger version the tools
// module requires.
func codegenVersion(tools string) (string, error) {
	path := filepath.Join(tools, "go.mod")
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	f, err := modfile.ParseLax(path, raw, nil)
	if err != nil {
		return "", err
	}
	for _, r := range f.Require {
		if r.Mod.Path == daggerPath {
			return r.Mod.Version, nil
		}
	}
	return "", fmt.Errorf("%s does not require %s", path, daggerPath)
}

// wrapSchema writes the snapshot as an introspection result:
// {"__schema": <snapshot>, "__schemaVersion": version}.
func wrapSchema(ctx context.Context, tools, cacheDir, version string) (string, error) {
	dir, err := run(ctx, tools, "go", "list", "-m", "-f", "{{.Dir}}", daggerPath)
	if err != nil {
		return "", err
	}
	raw, err := os.ReadFile(filepath.Join(strings.TrimSpace(dir), schemaSnapshot))
	if err != nil {
		return "", fmt.Errorf("the schema snapshot: %w", err)
	}
	if !json.Valid(raw) {
		return "", fmt.Errorf("%s in %s@%s is not JSON", schemaSnapshot, daggerPath, version)
	}
	wrapped, err := json.Marshal(struct {
		Schema  json.RawMessage `json:"__schema"`
		Version string          `json:"__schemaVersion"`
	}{raw, version})
	if err != nil {
		return "", err
	}
	path := filepath.Join(cacheDir, "introspection-"+version+".json")
	return path, os.WriteFile(path, wrapped, 0o644)
}

func readModFiles(dir string) ([]byte, error) {
	var all []byte
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		all = append(append(all, b...), 0)
	}
	return all, nil
}

// run runs a command in dir and returns its stdout.
func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	out, err := cmdrun.Cmd{Dir: dir}.Run(ctx, name, args...)
	return string(out), err
}

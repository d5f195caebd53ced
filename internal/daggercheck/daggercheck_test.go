package daggercheck

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyModule copies dagger.json, the module (its committed files only:
// no generated bindings) and the codegen's tools module into a new root.
func copyModule(t *testing.T) string {
	t.Helper()
	repo := filepath.Join("..", "..")
	root := t.TempDir()
	for _, dir := range []string{"ci", ToolsDir} {
		src := filepath.Join(repo, dir)
		err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(repo, path)
			if d.IsDir() {
				if rel == filepath.Join("ci", "internal") {
					return filepath.SkipDir // generated
				}
				return os.MkdirAll(filepath.Join(root, rel), 0o755)
			}
			if d.Name() == "dagger.gen.go" {
				return nil
			}
			b, err := os.ReadFile(path)
			if err == nil {
				err = os.WriteFile(filepath.Join(root, rel), b, 0o644)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(repo, "dagger.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "dagger.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestATypeErrorInTheModuleFailsTheCheck(t *testing.T) {
	root := copyModule(t)
	main := filepath.Join(root, "ci", "main.go")
	src, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	// A function returning the wrong type: a mistake only the generated
	// bindings' types reveal.
	broken := string(src) + "\n// Broken returns the source as a container.\nfunc (m *Darktower) Broken() *dagger.Container {\n\treturn m.Source\n}\n"
	if err := os.WriteFile(main, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	err = Run(context.Background(), Options{Root: root, CacheDir: t.TempDir(), Progress: &progress})
	if err == nil {
		t.Fatalf("the check passed a module with a type error\n%s", progress.String())
	}
	for _, want := range []string{"go build ./...", "main.go", "cannot use m.Source"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "ci", "internal", "dagger", "dagger.gen.go")); err != nil {
		t.Errorf("the bindings were not generated: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "ci", "internal", "dagger", "sub-1.gen.go")); err == nil {
		t.Error("the snapshot's test-only bindings were left in place")
	}
}

func TestMismatchedOrMalformedConfigIsRefusedBeforeGenerating(t *testing.T) {
	for name, c := range map[string]struct{ config, want string }{
		"engine drift":  {`{"name":"darktower","engineVersion":"v0.21.6","sdk":{"source":"go"},"source":"ci"}`, "dagger.json pins engine v0.21.6 but tools/dagger-codegen/go.mod builds the codegen of v0.21.7"},
		"unpinned":      {`{"name":"darktower","engineVersion":"latest","sdk":{"source":"go"},"source":"ci"}`, `engineVersion "latest" is not a pinned version`},
		"other sdk":     {`{"name":"darktower","engineVersion":"v0.21.7","sdk":{"source":"python"},"source":"ci"}`, `sdk.source is "python"`},
		"source escape": {`{"name":"darktower","engineVersion":"v0.21.7","sdk":{"source":"go"},"source":"../elsewhere"}`, `source "../elsewhere" is not a directory inside the repository`},
		"not json":      {`{"name":`, "dagger.json"},
	} {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, ToolsDir), 0o755)
		os.MkdirAll(filepath.Join(root, "ci"), 0o755)
		os.WriteFile(filepath.Join(root, "ci", "go.mod"), []byte("module dagger/darktower\n\ngo 1.26.1\n"), 0o644)
		os.WriteFile(filepath.Join(root, ToolsDir, "go.mod"), []byte("module x\n\ngo 1.26.1\n\nrequire github.com/dagger/dagger v0.21.7\n"), 0o644)
		os.WriteFile(filepath.Join(root, "dagger.json"), []byte(c.config), 0o644)
		err := Run(context.Background(), Options{Root: root, CacheDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

// The repository's own dagger.json is what the check and the engine read.
func TestRepositoryConfigPinsTheCodegensVersion(t *testing.T) {
	cfg, err := ReadConfig(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	v, err := codegenVersion(filepath.Join("..", "..", ToolsDir))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "darktower" || cfg.Source != "ci" || cfg.EngineVersion != "v0.21.7" || v != cfg.EngineVersion {
		t.Errorf("dagger.json %+v, codegen %s: want module darktower from ci/, engine and codegen v0.21.7", cfg, v)
	}
}

// The codegen parses the pragmas: a malformed +ignore fails the check.
func TestAMalformedPragmaFailsTheCheck(t *testing.T) {
	root := copyModule(t)
	main := filepath.Join(root, "ci", "main.go")
	src, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(src), `// +ignore=["dist",`, `// +ignore=["dist" oops,`, 1)
	if broken == string(src) {
		t.Fatal("ci/main.go has no +ignore pragma on the source argument")
	}
	if err := os.WriteFile(main, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Options{Root: root, CacheDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "ignore pragma") || !strings.Contains(err.Error(), "must be a valid JSON array") {
		t.Fatalf("err = %v, want the codegen's refusal of the pragma", err)
	}
}

package modcheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// constructorIgnore is the +ignore list of New's source argument.
func constructorIgnore(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), modulePath, nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != "New" || fd.Recv != nil {
			continue
		}
		for _, p := range fd.Type.Params.List {
			if p.Names[0].Name != "source" {
				continue
			}
			// A parameter's doc: the comment group right before it
			// (go/parser attaches none to parameters).
			var doc *ast.CommentGroup
			for _, cg := range f.Comments {
				if cg.Pos() > fd.Type.Params.Opening && cg.End() < p.Pos() {
					doc = cg
				}
			}
			if doc == nil {
				t.Fatal("New's source has no doc comment")
			}
			v, ok := pragmas(doc.Text())["ignore"].([]any)
			if !ok {
				t.Fatalf("New's source has no +ignore list: %q", doc.Text())
			}
			var out []string
			for _, e := range v {
				out = append(out, e.(string))
			}
			return out
		}
	}
	t.Fatal("no New(source ...) in " + modulePath)
	return nil
}

// daggerPattern is a .gitignore line (in the .gitignore of directory dir,
// relative to the repository) as a pattern relative to the repository
// root in Dagger's +ignore syntax (.dockerignore's: ** for any depth).
func daggerPattern(dir, line string) string {
	p := strings.TrimSuffix(line, "/")
	switch {
	case strings.HasPrefix(p, "/"):
		p = strings.TrimPrefix(p, "/")
	case !strings.Contains(p, "/"):
		p = "**/" + p // matches at any depth below dir
	}
	if dir != "." {
		p = path.Join(dir, p)
	}
	return p
}

// Nothing git ignores — infra/local/.env with its secrets, build outputs,
// the generated bindings — is uploaded into the engine: every pattern of
// every .gitignore is in the constructor's +ignore (which also drops
// .git's hooks and logs). A negated pattern (!x) could not be kept in
// sync this way and is refused.
func TestConstructorIgnoresWhatGitIgnores(t *testing.T) {
	ignore := map[string]bool{}
	for _, p := range constructorIgnore(t) {
		ignore[p] = true
	}
	root := filepath.Join("..", "..")
	out, err := exec.Command("git", "-C", root, "ls-files", "--", ".gitignore", "**/.gitignore").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	files := strings.Fields(string(out))
	if len(files) == 0 {
		t.Fatal("no .gitignore found")
	}
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if strings.HasPrefix(line, "!") {
				t.Errorf("%s: negated pattern %q: the +ignore list cannot follow it", f, line)
				continue
			}
			if p := daggerPattern(path.Dir(f), line); !ignore[p] {
				t.Errorf("%s ignores %q, but the Dagger constructor's +ignore lacks %q: it would be uploaded into the engine", f, line, p)
			}
		}
	}
}

func TestDaggerPattern(t *testing.T) {
	for _, c := range [][3]string{{".", "/dist/", "dist"}, {".", "*.test", "**/*.test"}, {".", "infra/local/.env", "infra/local/.env"},
		{"ci", "/internal/dagger/", "ci/internal/dagger"}, {"ci", "*.out", "ci/**/*.out"}} {
		if got := daggerPattern(c[0], c[1]); got != c[2] {
			t.Errorf("daggerPattern(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}

package modcheck

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// modulePath is the module's functions, relative to this package.
const modulePath = "../main.go"

// caching is the decision for every function of the module: "never" for
// those whose result depends on state outside their arguments (registries,
// the vulnerability DB, Fulcio/Rekor and the OIDC token, the clock), ""
// (Dagger's default: cached for 7 days by their inputs) for pure ones.
// docs/dagger.md has the same table with the reasons.
var caching = map[string]string{
	"New":       "",      // the constructor: the source and the image name
	"BuildAll":  "never", // Trivy DB, base by tag, signing (time, keyless certificate)
	"Build":     "never", // scans with the current DB
	"Sbom":      "",      // the SBOMs of the source on the locked (by digest) base
	"Scan":      "never", // the current vulnerability DB
	"Sign":      "never", // signatures, and a scan, of now
	"Publish":   "never", // pushes: the registry's state
	"Verify":    "never", // the registry, Rekor and TUF as they are now
	"Ci":        "never", // the scan, and tests that use the clock
	"CiVerdict": "",      // reads the directory it is given
	"Release":   "never", // pushes, signs keyless
	"Promote":   "never", // both registries as they are now; copies
	// The previews: the Docker engine behind the socket, its clusters, the clock.
	"PreviewUp":   "never", // creates or updates a cluster; build-all with the current DB
	"Chaos":       "never", // breaks a running cluster and judges what it does now
	"PreviewDown": "never", // deletes a cluster
	"PreviewList": "never", // the engine's clusters as they are now
	"PreviewReap": "never", // the clusters' ages against the clock
}

// pragmaRE is the Dagger Go codegen's own pattern for a pragma
// (cmd/codegen/generator/go/templates/modules.go, v0.21.7).
var pragmaRE = regexp.MustCompile(`[ \t]*\+[ \t]*(\S+?)(?:(=[ \t]*)|(?:\r?\n|$))`)

// pragmas reads a doc comment's pragmas as the codegen does: the value is
// JSON when it parses as JSON, else the rest of the line.
func pragmas(doc string) map[string]any {
	out := map[string]any{}
	for _, m := range pragmaRE.FindAllStringSubmatchIndex(doc, -1) {
		key := doc[m[2]:m[3]]
		if m[4] == -1 {
			out[key] = nil
			continue
		}
		rest := doc[m[5]:]
		var v any
		if err := json.NewDecoder(strings.NewReader(rest)).Decode(&v); err == nil {
			out[key] = v
			continue
		}
		line, _, _ := strings.Cut(rest, "\n")
		out[key] = line
	}
	return out
}

type function struct {
	decl  *ast.FuncDecl
	cache any // the +cache value; nil when absent
	has   bool
}

func parseModule(t *testing.T) map[string]function {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), modulePath, nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	fns := map[string]function{}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || !fd.Name.IsExported() {
			continue
		}
		if fd.Recv != nil {
			star, ok := fd.Recv.List[0].Type.(*ast.StarExpr)
			if !ok || star.X.(*ast.Ident).Name != "Darktower" {
				continue
			}
		} else if fd.Name.Name != "New" {
			continue
		}
		fn := function{decl: fd}
		fn.cache, fn.has = pragmas(fd.Doc.Text())["cache"]
		fns[fd.Name.Name] = fn
	}
	return fns
}

// Every function's +cache pragma is the one decided above; a function
// added without a decision fails too.
func TestEveryFunctionHasItsCachePolicy(t *testing.T) {
	fns := parseModule(t)
	var names []string
	for n := range fns {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		want, decided := caching[n]
		if !decided {
			t.Errorf("%s: no caching decision: add it to this test's table and docs/dagger.md", n)
			continue
		}
		fn := fns[n]
		switch {
		case want == "" && fn.has:
			t.Errorf("%s: +cache=%v, but it is pure: keep Dagger's default", n, fn.cache)
		case want != "" && fn.cache != want:
			t.Errorf("%s: +cache is %v (present: %v), want %q: its result depends on state outside its arguments", n, fn.cache, fn.has, want)
		}
	}
	for n := range caching {
		if _, ok := fns[n]; !ok {
			t.Errorf("%s is in the table but not in main.go", n)
		}
	}
}

// A +cache="never" function is called again, but its container steps are
// served from the layer cache unless one of their inputs changed: each
// such function must reach perCall (directly or through the methods it
// calls, with fresh=true for buildAll and reports) before its command runs; a pure one
// must not.
func TestUncachedFunctionsReExecuteTheirSteps(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), modulePath, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	bodies := map[string]*ast.BlockStmt{}
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
			bodies[fd.Name.Name] = fd.Body
		}
	}
	var fresh func(name string, seen map[string]bool) bool
	fresh = func(name string, seen map[string]bool) bool {
		if seen[name] {
			return false
		}
		seen[name] = true
		found := false
		ast.Inspect(bodies[name], func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || found {
				return !found
			}
			var callee string
			switch fun := call.Fun.(type) {
			case *ast.Ident:
				callee = fun.Name
			case *ast.SelectorExpr:
				if x, ok := fun.X.(*ast.Ident); ok && x.Name == "m" {
					callee = fun.Sel.Name
				}
			}
			switch {
			case callee == "perCall":
				found = true
			case callee == "buildAll" || callee == "reports":
				// its last argument says whether it calls perCall
				last, ok := call.Args[len(call.Args)-1].(*ast.Ident)
				found = ok && last.Name == "true"
			case callee != "" && bodies[callee] != nil:
				found = fresh(callee, seen)
			}
			return !found
		})
		return found
	}
	for name, want := range caching {
		if name == "New" {
			continue
		}
		if got := fresh(name, map[string]bool{}); got != (want == "never") {
			t.Errorf("%s: re-executes its steps: %v, want %v (+cache=%q)", name, got, want == "never", want)
		}
	}
}

func TestPragmaParserReadsTheCodegensForms(t *testing.T) {
	got := pragmas("Does things.\n\n+cache=\"never\"\n+optional\n+default=\"x\"\n+ignore=[\"a\", \"b\"]\n")
	if got["cache"] != "never" || got["default"] != "x" || len(got["ignore"].([]any)) != 2 {
		t.Errorf("%#v", got)
	}
	if v, ok := got["optional"]; !ok || v != nil {
		t.Errorf("optional: %#v", got)
	}
}

package scan

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// Two throwaway programs on golang.org/x/text v0.3.7, which GO-2022-1059
// (CVE-2022-32149, fixed in v0.3.8) affects through
// language.ParseAcceptLanguage: one calls it, one imports the package and
// calls only language.Und.IsRoot. govulncheck, against the pinned vulndb
// laid out by PrepareGoVulnData, finds the advisory in both and the
// symbol only in the first.
func TestCheckBinaryTellsReachableFromUnreachable(t *testing.T) {
	ctx := context.Background()
	data, err := PrepareGoVulnData(ctx, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if data.Time.IsZero() {
		t.Fatalf("no date: %+v", data)
	}
	for _, c := range []struct {
		name, body string
		want       string
	}{
		{"calls", `fmt.Println(language.ParseAcceptLanguage(os.Args[0]))`, Reachable},
		{"imports", `fmt.Println(language.Und.IsRoot(), len(os.Args))`, Unreachable},
	} {
		bin := goProgram(t, c.name, c.body)
		vulns, err := CheckBinary(ctx, data, bin)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(vulns, func(v *GoVuln) bool { return v.ID == "GO-2022-1059" && v.Module == "golang.org/x/text" })
		if i < 0 {
			t.Fatalf("%s: no GO-2022-1059 for golang.org/x/text in %d findings", c.name, len(vulns))
		}
		v := vulns[i]
		if v.Reachability != c.want || v.Version != "v0.3.7" || v.Fixed != "v0.3.8" || !v.Names("CVE-2022-32149") {
			t.Errorf("%s: %+v, want %s", c.name, v, c.want)
		}
		if c.want == Reachable && !slices.Contains(v.Symbols, "golang.org/x/text/language.ParseAcceptLanguage") {
			t.Errorf("%s: symbols %v lack language.ParseAcceptLanguage", c.name, v.Symbols)
		}
		t.Logf("%s: %s %s %v", c.name, v.ID, v.Reachability, v.Symbols)
	}
}

// goProgram builds a main module requiring golang.org/x/text v0.3.7 (from
// the Go module proxy) whose main runs body, with its symbol table.
func goProgram(t *testing.T, name, body string) string {
	t.Helper()
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\n\t\"golang.org/x/text/language\"\n)\n\nfunc main() {\n\t" + body + "\n}\n"
	for f, s := range map[string]string{"go.mod": "module example.com/" + name + "\n\ngo 1.27\n\nrequire golang.org/x/text v0.3.7\n", "main.go": src} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-trimpath", "-o", name}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
	}
	return filepath.Join(dir, name)
}

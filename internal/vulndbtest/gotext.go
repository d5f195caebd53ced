package vulndbtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// GoTextAdvisory is the Go vulnerability database's advisory the GoTextRepo
// services meet: golang.org/x/text before v0.3.8 (CVE-2022-32149), through
// language.ParseAcceptLanguage and language.MatchStrings.
const GoTextAdvisory = "GO-2022-1059"

// GoTextRepo writes a throwaway repository into root: images/ with two
// linux/amd64 services of one module on golang.org/x/text v0.3.7 (from
// the Go module proxy: `go mod tidy` writes go.sum). "calls" calls
// language.ParseAcceptLanguage; "imports" imports the package and calls
// only language.Und.IsRoot. The specs' base is not pinned (no lock file).
func GoTextRepo(root string) error {
	prog := func(body string) string {
		return "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\n\t\"golang.org/x/text/language\"\n)\n\nfunc main() {\n\t" + body + "\n}\n"
	}
	spec := func(name string) string {
		return "name: " + name + "\ndescription: throwaway service on golang.org/x/text v0.3.7\nmodule: fx\nmain: ./cmd/" + name +
			"\nbinary: /usr/local/bin/" + name + "\nports: [8080/tcp]\nbase: example.com/base:1\nplatforms: [linux/amd64]\n"
	}
	files := map[string]string{
		"fx/go.mod":              "module example.com/fx\n\ngo 1.27\n\nrequire golang.org/x/text v0.3.7\n",
		"fx/cmd/calls/main.go":   prog(`fmt.Println(language.ParseAcceptLanguage(os.Args[0]))`),
		"fx/cmd/imports/main.go": prog(`fmt.Println(language.Und.IsRoot(), len(os.Args))`),
		"images/calls.yaml":      spec("calls"),
		"images/imports.yaml":    spec("imports"),
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	tidy := exec.Command("go", "mod", "tidy")
	tidy.Dir = filepath.Join(root, "fx")
	if out, err := tidy.CombinedOutput(); err != nil {
		return fmt.Errorf("go mod tidy in %s: %v\n%s", tidy.Dir, err, out)
	}
	return nil
}

package catalog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRepositorySpecsLoad(t *testing.T) {
	c, err := Load("../../images")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ac-service", "flag-gateway", "global-controller", "media-handler", "meeting-controller"}
	if got := c.Names(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("names = %v", got)
	}
	specs, _ := c.Select(nil)
	for _, s := range specs {
		if s.Binary != "/usr/local/bin/"+s.Name || s.Main != "./cmd/"+s.Name || len(s.Platforms) != 2 {
			t.Errorf("%s: %+v", s.Name, s)
		}
		if _, err := os.Stat(filepath.Join("../..", s.Module, s.Main)); err != nil {
			t.Errorf("%s: main package missing: %v", s.Name, err)
		}
	}
}

const good = `name: svc
description: d
module: services
main: ./cmd/svc
binary: /usr/local/bin/svc
ports: [8080/tcp]
base: example.com/base:1
platforms: [linux/amd64]
`

func loadOne(t *testing.T, files map[string]string) error {
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Load(dir)
	return err
}

func TestBadSpecsAreRefusedWithTheReason(t *testing.T) {
	for name, c := range map[string]struct {
		files map[string]string
		want  string
	}{
		"unknown field":  {map[string]string{"a.yaml": good + "entrypoint: /bin/sh\n"}, `unknown field "entrypoint"`},
		"bad platform":   {map[string]string{"a.yaml": strings.Replace(good, "linux/amd64", "windows/386", 1)}, `platform "windows/386" is not supported`},
		"bad port":       {map[string]string{"a.yaml": strings.Replace(good, "8080/tcp", "8080/sctp", 1)}, `port "8080/sctp"`},
		"duplicate name": {map[string]string{"a.yaml": good, "b.yaml": good}, `name "svc" is already defined`},
		"relative bin":   {map[string]string{"a.yaml": strings.Replace(good, "/usr/local/bin/svc", "svc", 1)}, "binary must be an absolute file path"},
		"no specs":       {map[string]string{}, "no image specs"},
	} {
		err := loadOne(t, c.files)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

func TestSelectUnknownServiceNamesTheKnownOnes(t *testing.T) {
	c, err := Load("../../images")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Select([]string{"ac-service", "billing"})
	if err == nil || !strings.Contains(err.Error(), `unknown service "billing"`) || !strings.Contains(err.Error(), "media-handler") {
		t.Fatalf("err = %v", err)
	}
}

// images/platform: the third-party programs the clusters run, each from a
// tool module whose dependency holds the main package.
func TestPlatformSpecsLoad(t *testing.T) {
	c, err := Load("../../images/platform")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"flagger": "github.com/fluxcd/flagger/cmd/flagger", "traefik": "github.com/traefik/traefik/v3/cmd/traefik"}
	if got := c.Names(); strings.Join(got, ",") != "flagger,traefik" {
		t.Fatalf("names = %v", got)
	}
	specs, _ := c.Select(nil)
	for _, s := range specs {
		if s.Main != want[s.Name] || s.Relative() || s.Module != "tools/canary/"+s.Name || s.Binary != "/usr/local/bin/"+s.Name {
			t.Errorf("%s: %+v", s.Name, s)
		}
		if _, err := os.Stat(filepath.Join("../..", s.Module, "go.mod")); err != nil {
			t.Errorf("%s: tool module missing: %v", s.Name, err)
		}
	}
	for name, main := range map[string]string{"parent": "../cmd/svc", "no host": "cmd/svc", "dot-dot": "example.com/a/../b"} {
		if err := loadOne(t, map[string]string{"a.yaml": strings.Replace(good, "./cmd/svc", main, 1)}); err == nil || !strings.Contains(err.Error(), "main must be") {
			t.Errorf("%s: main %q: err = %v", name, main, err)
		}
	}
	if err := loadOne(t, map[string]string{"a.yaml": strings.Replace(good, "./cmd/svc", "example.com/svc/cmd/svc", 1)}); err != nil {
		t.Errorf("a dependency's main package: %v", err)
	}
}

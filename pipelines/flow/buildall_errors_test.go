package flow

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/dockerload"
	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/darktower/delivery/pipelines/sign"
)

// fixtureRepo is a tiny module with one good and one broken service, so the
// failure paths are tested without compiling the real services.
func fixtureRepo(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"fx/go.mod":             "module example.com/fx\n\ngo 1.27\n",
		"fx/cmd/ok/main.go":     "package main\n\nfunc main() {}\n",
		"fx/cmd/broken/main.go": "package main\n\nfunc main() { undefinedCall() }\n",
		"images/ok.yaml":        spec("ok", "./cmd/ok"),
		"images/broken.yaml":    spec("broken", "./cmd/broken"),
		"images/missing.yaml":   spec("missing", "./cmd/missing"),
		"dist/manifest.json":    `{"stale": "from an earlier build"}`,
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func spec(name, main string) string {
	return "name: " + name + "\ndescription: fixture\nmodule: fx\nmain: " + main +
		"\nbinary: /usr/local/bin/" + name + "\nports: [8080/tcp]\nbase: example.com/base:1\nplatforms: [linux/amd64]\n"
}

func TestBuildAllFailuresNameTheCauseAndClaimNothing(t *testing.T) {
	root := fixtureRepo(t)
	fileAsDir := filepath.Join(root, "images", "ok.yaml", "out") // a path under a regular file
	for name, c := range map[string]struct {
		services []string
		base     string
		out      string
		want     string
	}{
		"unknown service":   {[]string{"nope"}, build.BaseSkeleton, "", `unknown service "nope"`},
		"missing main":      {[]string{"missing"}, build.BaseSkeleton, "", "main package ./cmd/missing not found"},
		"compile error":     {[]string{"ok", "broken"}, build.BaseSkeleton, "", "undefined: undefinedCall"},
		"unresolvable base": {[]string{"ok"}, "oci-layout:" + filepath.Join(root, "no-such-layout"), "", "not an OCI image layout"},
		"unreachable base":  {[]string{"ok"}, "127.0.0.1:1/distroless/static:nonroot", "", "127.0.0.1:1/distroless/static:nonroot cannot be resolved"},
		"malformed base":    {[]string{"ok"}, "Not A Reference", "", `expected "locked", "skeleton", oci-layout:PATH or an image reference`},
		"unwritable out":    {[]string{"ok"}, build.BaseSkeleton, fileAsDir, "choose another with --out"},
	} {
		out := c.out
		if out == "" {
			out = filepath.Join(root, "dist")
		}
		_, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: c.services, Out: out,
			Base: c.base, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, c.want)
		}
		if _, statErr := os.Stat(filepath.Join(root, "dist", build.ManifestFile)); statErr == nil && name != "unknown service" && name != "unwritable out" {
			t.Errorf("%s: dist/manifest.json exists after a failed build", name)
		}
	}
	// And the good service alone builds, into a manifest naming only it.
	m, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"},
		Out: filepath.Join(root, "dist"), Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys})
	if err != nil || len(m.Images) != 1 || m.Images[0].Service != "ok" {
		t.Fatalf("good build: %v %+v", err, m)
	}
	if _, err := os.Stat(filepath.Join(root, "dist", build.ManifestFile)); err != nil {
		t.Fatal("manifest.json missing after a good build")
	}
}

func TestOCILayoutBaseRoundTrip(t *testing.T) {
	// A build's own output is a valid --base oci-layout: the skeleton's
	// files come through, the app layer stacks on top.
	root := fixtureRepo(t)
	first, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"},
		Out: filepath.Join(root, "base-out"), Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys})
	if err != nil {
		t.Fatal(err)
	}
	baseLayout := filepath.Join(root, "base-out", build.LayoutDir)
	m, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"},
		Out: filepath.Join(root, "dist2"), Base: "oci-layout:" + baseLayout, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys})
	if err != nil {
		t.Fatal(err)
	}
	if m.Images[0].BaseDigest != first.Images[0].Digest || m.Images[0].Platforms[0].Layers != 3 {
		t.Fatalf("base digest %s (want %s), layers %d (want 3)", m.Images[0].BaseDigest, first.Images[0].Digest, m.Images[0].Platforms[0].Layers)
	}
}

func TestBuildAllPushRecordsRefsInManifest(t *testing.T) {
	root := fixtureRepo(t)
	host := testreg.Distribution(t)
	out := filepath.Join(root, "dist")
	// What is pushed is never signed with the development key: refused
	// before anything is built.
	_, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: out,
		Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys, Push: host + "/darktower"})
	if err == nil || !strings.Contains(err.Error(), "development key") || !strings.Contains(err.Error(), "id-token: write") {
		t.Fatalf("push with the development key: err = %v", err)
	}
	if _, serr := os.Stat(filepath.Join(out, build.LayoutDir)); serr == nil {
		t.Fatal("an OCI layout was written before the refusal")
	}
	// A key given with --key is the publisher's choice, whatever made it.
	if _, err := sign.DevKey(testDevKeys); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(testDevKeys, "cosign.key")
	m, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: out,
		Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, Key: keyFile, Push: host + "/darktower"})
	if err != nil {
		t.Fatal(err)
	}
	want := host + "/darktower/ok:1.0.0@" + m.Images[0].Digest
	raw, _ := os.ReadFile(filepath.Join(out, build.ManifestFile))
	if m.Images[0].Pushed != want || !strings.Contains(string(raw), want) {
		t.Fatalf("pushed = %q, manifest.json:\n%s", m.Images[0].Pushed, raw)
	}
	// A push that fails (nothing listens there) fails build-all.
	_, err = BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: out,
		Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, Key: keyFile, Push: "127.0.0.1:1/darktower"})
	if err == nil || !strings.Contains(err.Error(), "pushing ok") {
		t.Fatalf("err = %v", err)
	}
}

func TestBuildAllLoadFailuresNameTheFix(t *testing.T) {
	root := fixtureRepo(t)
	out := filepath.Join(root, "dist")
	// No engine at DOCKER_HOST: refused before the build, the CLI's reason kept.
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(root, "no-engine.sock"))
	_, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: out,
		Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys, Load: true})
	if err == nil || !strings.Contains(err.Error(), "no Docker engine answers") || !strings.Contains(err.Error(), "no-engine.sock") {
		t.Errorf("no engine: err = %v", err)
	}
	// The host platform not built: nothing is handed to Docker.
	other := "linux/arm64"
	if dockerload.HostPlatform().Arch == "arm64" {
		other = "linux/amd64"
	}
	_, err = BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: out, Platforms: []string{other},
		Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys, Load: true})
	if err == nil || !strings.Contains(err.Error(), "include "+dockerload.HostPlatform().String()+" in --platforms") {
		t.Errorf("host platform missing: err = %v", err)
	}
	// No docker CLI at all.
	t.Setenv("PATH", t.TempDir())
	_, err = BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: out,
		Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys, Load: true})
	if err == nil || !strings.Contains(err.Error(), "--load needs the docker CLI") {
		t.Errorf("no CLI: err = %v", err)
	}
}

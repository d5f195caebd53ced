package flow

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/darktower/delivery/pipelines/sign"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

func TestUnchangedServicesAreReusedNotReassembled(t *testing.T) {
	root := fixtureRepo(t)
	if err := os.WriteFile(filepath.Join(root, "images", "ok2.yaml"), []byte(spec("ok2", "./cmd/ok")), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "dist")
	opts := BuildAllOptions{Root: root, Services: []string{"ok", "ok2"}, Out: out, Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys}
	buildOnce := func() map[string]*build.Image {
		t.Helper()
		m, err := BuildAll(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		return byService(m)
	}
	first := buildOnce()
	if first["ok"].Reused || first["ok2"].Reused {
		t.Fatal("a first build reused something")
	}
	second := buildOnce()
	for _, svc := range []string{"ok", "ok2"} {
		if !second[svc].Reused || second[svc].Digest != first[svc].Digest {
			t.Errorf("%s: unchanged but reused=%v, digest %s vs %s", svc, second[svc].Reused, second[svc].Digest, first[svc].Digest)
		}
	}
	// The reused images are whole in the new layout: push reads them from it.
	// (Signed with a key given as --key: what is pushed is never signed
	// with the development key.)
	host := testreg.InProcess(t)
	if _, err := sign.DevKey(testDevKeys); err != nil {
		t.Fatal(err)
	}
	opts.Push, opts.Key = host+"/darktower", filepath.Join(testDevKeys, "cosign.key")
	third := buildOnce()
	if third["ok"].Pushed == "" || !third["ok"].Reused {
		t.Fatalf("push after reuse: %+v", third["ok"])
	}
	opts.Push, opts.Key = "", ""
	p, err := layout.FromPath(filepath.Join(out, build.LayoutDir))
	if err != nil {
		t.Fatal(err)
	}
	if idx, err := p.ImageIndex(); err != nil {
		t.Fatal(err)
	} else {
		im, _ := idx.IndexManifest()
		indexes, artifacts := 0, 0
		for _, d := range im.Manifests {
			if d.MediaType.IsIndex() {
				indexes++
			} else if ref := d.Annotations["org.opencontainers.image.ref.name"]; strings.HasSuffix(ref, ".sig") || strings.HasSuffix(ref, ".att") {
				artifacts++
			}
		}
		if indexes != 2 || artifacts != 4 || len(im.Manifests) != 6 {
			t.Fatalf("layout lists %d images, %d artifacts (%d entries), want 2 images, their 2 signatures and 2 attestation sets", indexes, artifacts, len(im.Manifests))
		}
	}

	// A source change rebuilds exactly the services it touches (here both
	// share ./cmd/ok); a version change rebuilds everything.
	if err := os.WriteFile(filepath.Join(root, "fx", "cmd", "ok", "main.go"), []byte("package main\n\nfunc main() { println(1) }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	changed := buildOnce()
	if changed["ok"].Reused || changed["ok"].Digest == first["ok"].Digest {
		t.Errorf("ok changed but was reused (digest %s)", changed["ok"].Digest)
	}
	opts.Services = []string{"ok"}
	opts.Version = "1.0.1"
	if again := buildOnce(); again["ok"].Reused {
		t.Error("a new version reused the old image")
	}
	// A manifest that no longer matches its layout is not trusted.
	opts.Version = "1.0.1"
	if err := os.RemoveAll(filepath.Join(out, build.LayoutDir, "blobs")); err != nil {
		t.Fatal(err)
	}
	if again := buildOnce(); again["ok"].Reused {
		t.Error("reused an image whose blobs are gone")
	}
}

// byService indexes a build's images by service.
func byService(m *build.Manifest) map[string]*build.Image {
	out := map[string]*build.Image{}
	for _, img := range m.Images {
		out[img.Service] = img
	}
	return out
}

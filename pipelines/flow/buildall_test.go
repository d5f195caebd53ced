package flow

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/build"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// fixedEnv pins SOURCE_DATE_EPOCH so builds outside git are reproducible.
func fixedEnv(k string) string {
	if k == "SOURCE_DATE_EPOCH" {
		return "1767225600" // 2026-01-01T00:00:00Z
	}
	return ""
}

// copyTree copies the parts of the repository a build reads.
func copyTree(t *testing.T, dst string) {
	t.Helper()
	for _, dir := range []string{"images", "services"} {
		cmd := exec.Command("cp", "-r", filepath.Join("..", "..", dir), filepath.Join(dst, dir))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("copying %s: %v\n%s", dir, err, out)
		}
	}
}

func buildRepoCopy(t *testing.T, platforms []string) (*build.Manifest, string) {
	t.Helper()
	root := t.TempDir()
	copyTree(t, root)
	out := filepath.Join(root, "dist")
	m, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Out: out, Base: build.BaseSkeleton,
		Platforms: platforms, Version: "1.2.3", SourceURL: "https://example.com/src", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys})
	if err != nil {
		t.Fatal(err)
	}
	return m, out
}

func TestBuildsAreReproducibleAcrossDirectories(t *testing.T) {
	m1, _ := buildRepoCopy(t, []string{"linux/amd64"})
	m2, _ := buildRepoCopy(t, []string{"linux/amd64"})
	if len(m1.Images) != 5 {
		t.Fatalf("built %d images, want 5", len(m1.Images))
	}
	for i := range m1.Images {
		a, b := m1.Images[i], m2.Images[i]
		if a.Digest != b.Digest || a.Platforms[0].Digest != b.Platforms[0].Digest {
			t.Errorf("%s: %s vs %s — not reproducible", a.Service, a.Digest, b.Digest)
		}
	}
}

// imageFiles lists every path in every layer of img, with its header.
func imageFiles(t *testing.T, img v1.Image) (perLayer [][]*tar.Header) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		var hs []*tar.Header
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		rc.Close()
		perLayer = append(perLayer, hs)
	}
	return perLayer
}

func TestImageStructure(t *testing.T) {
	m, out := buildRepoCopy(t, nil)
	raw, err := os.ReadFile(filepath.Join(out, build.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	var onDisk build.Manifest
	if err := json.Unmarshal(raw, &onDisk); err != nil || len(onDisk.Images) != 5 {
		t.Fatalf("manifest.json: %v (%d images)", err, len(onDisk.Images))
	}
	root, err := layout.ImageIndexFromPath(filepath.Join(out, build.LayoutDir))
	if err != nil {
		t.Fatal(err)
	}
	rootManifest, _ := root.IndexManifest()
	tags := map[string]v1.Hash{}
	for _, d := range rootManifest.Manifests {
		tags[d.Annotations["org.opencontainers.image.ref.name"]] = d.Digest
	}
	for _, img := range m.Images {
		digest, ok := tags[img.Service+":1.2.3"]
		if !ok || digest.String() != img.Digest {
			t.Fatalf("%s: layout tag %s:1.2.3 = %v, manifest says %s", img.Service, img.Service, digest, img.Digest)
		}
		idx, err := root.ImageIndex(digest)
		if err != nil {
			t.Fatal(err)
		}
		im, _ := idx.IndexManifest()
		var plats []string
		for _, d := range im.Manifests {
			plats = append(plats, d.Platform.OS+"/"+d.Platform.Architecture)
		}
		slices.Sort(plats)
		if strings.Join(plats, ",") != "linux/amd64,linux/arm64" {
			t.Errorf("%s: index platforms %v", img.Service, plats)
		}
		for _, key := range []string{"source", "revision", "version", "created", "title", "description", "licenses", "base.name", "base.digest"} {
			if im.Annotations["org.opencontainers.image."+key] == "" {
				t.Errorf("%s: index lacks annotation org.opencontainers.image.%s", img.Service, key)
			}
		}
		for _, d := range im.Manifests {
			image, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			checkPlatformImage(t, img.Service, image, d.Platform)
		}
	}
}

func checkPlatformImage(t *testing.T, service string, img v1.Image, p *v1.Platform) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	binary := "/usr/local/bin/" + service
	if cf.Config.User != "65532:65532" || !slices.Equal(cf.Config.Entrypoint, []string{binary}) || len(cf.Config.Cmd) != 0 {
		t.Errorf("%s %s: user %q entrypoint %v cmd %v", service, p.Architecture, cf.Config.User, cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture {
		t.Errorf("%s: config platform %s/%s in the %s/%s slot", service, cf.OS, cf.Architecture, p.OS, p.Architecture)
	}
	if _, ok := cf.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("%s: 8080/tcp not exposed", service)
	}
	if cf.Config.Labels["org.opencontainers.image.version"] != "1.2.3" || cf.Created.Unix() != 1767225600 {
		t.Errorf("%s: labels %v created %v", service, cf.Config.Labels, cf.Created)
	}
	layers := imageFiles(t, img)
	if len(layers) != 2 {
		t.Fatalf("%s: %d layers, want base + app", service, len(layers))
	}
	var app []string
	for _, h := range layers[1] {
		app = append(app, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 1767225600 {
			t.Errorf("%s: %s owner %d:%d mtime %v", service, h.Name, h.Uid, h.Gid, h.ModTime)
		}
	}
	want := []string{"usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/" + service}
	if !slices.Equal(app, want) {
		t.Errorf("%s: app layer holds %v, want %v", service, app, want)
	}
	for _, hs := range layers {
		for _, h := range hs {
			switch path.Base(strings.TrimSuffix(h.Name, "/")) {
			case "sh", "bash", "ash", "dash", "busybox", "zsh":
				t.Errorf("%s: image contains a shell: %s", service, h.Name)
			}
		}
	}
}

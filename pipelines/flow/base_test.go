package flow

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// publishBase builds the fixture's "ok" image on the skeleton (version
// picks the bytes) and pushes its index to ref, standing in for distroless.
func publishBase(t *testing.T, root, ref, version string) string {
	t.Helper()
	m, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"},
		Out: filepath.Join(root, "base-"+version), Base: build.BaseSkeleton, Version: version, Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys})
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, m.Images[0].Index); err != nil {
		t.Fatal(err)
	}
	return m.Images[0].Digest
}

func TestUpdateBasePinsAndLockedBuildsUseThePin(t *testing.T) {
	root := fixtureRepo(t)
	host, stopRegistry := testreg.InProcessStoppable(t)
	baseRef := host + "/distroless/static:nonroot"
	first := publishBase(t, root, baseRef, "base.1")
	// A spec on that base.
	okSpec := strings.Replace(spec("ok", "./cmd/ok"), "example.com/base:1", baseRef, 1)
	if err := os.WriteFile(filepath.Join(root, "images", "ok.yaml"), []byte(okSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"broken.yaml", "missing.yaml"} { // update-base reads every spec
		os.Remove(filepath.Join(root, "images", f))
	}
	imagesDir := filepath.Join(root, "images")

	// Not pinned yet: the locked build says how to pin, or what to use instead.
	cache := t.TempDir()
	locked := BuildAllOptions{Root: root, Services: []string{"ok"}, Out: filepath.Join(root, "dist"),
		Base: build.BaseLocked, CacheDir: cache, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys}
	if _, err := BuildAll(context.Background(), locked); err == nil || !strings.Contains(err.Error(), "update-base") || !strings.Contains(err.Error(), "--base skeleton") {
		t.Fatalf("unpinned base: err = %v", err)
	}

	var progress bytes.Buffer
	changes, err := UpdateBase(context.Background(), root, fixedEnv, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].New != first || changes[0].Old != "" || !strings.Contains(progress.String(), "pinned to "+first) {
		t.Fatalf("changes %+v, progress %q", changes, progress.String())
	}
	m, err := BuildAll(context.Background(), locked)
	if err != nil {
		t.Fatal(err)
	}
	if m.Images[0].BaseDigest != first || m.Images[0].BaseName != baseRef || m.Images[0].Platforms[0].Layers != 3 {
		t.Fatalf("locked build: base %s %s, %d layers; want %s %s, 3", m.Images[0].BaseName, m.Images[0].BaseDigest, m.Images[0].Platforms[0].Layers, baseRef, first)
	}

	// The tag moves; builds stay on the pin until update-base moves it.
	second := publishBase(t, root, baseRef, "base.2")
	if m, err = BuildAll(context.Background(), locked); err != nil || m.Images[0].BaseDigest != first {
		t.Fatalf("after the tag moved: %v, base %s, want still %s", err, m.Images[0].BaseDigest, first)
	}
	progress.Reset()
	if changes, err = UpdateBase(context.Background(), root, fixedEnv, &progress); err != nil || changes[0].Old != first || changes[0].New != second {
		t.Fatalf("second update-base: %v %+v", err, changes)
	}
	if !strings.Contains(progress.String(), first+" -> "+second) {
		t.Errorf("progress %q does not show the move", progress.String())
	}
	lock, err := build.ReadLock(imagesDir)
	if err != nil || lock.Bases[baseRef].Digest != second {
		t.Fatalf("lock: %v %+v", err, lock)
	}
	if m, err = BuildAll(context.Background(), locked); err != nil || m.Images[0].BaseDigest != second {
		t.Fatalf("after update-base: %v, base %s, want %s", err, m.Images[0].BaseDigest, second)
	}

	// The registry goes away: the pinned base comes from the cache.
	stopRegistry()
	if m, err = BuildAll(context.Background(), locked); err != nil || m.Images[0].BaseDigest != second {
		t.Fatalf("offline with a cached base: %v", err)
	}
	// Without the cache, the failure names the base and the alternatives.
	locked.CacheDir = t.TempDir()
	_, err = BuildAll(context.Background(), locked)
	if err == nil || !strings.Contains(err.Error(), baseRef+" cannot be resolved") || !strings.Contains(err.Error(), "--base skeleton") ||
		!strings.Contains(err.Error(), "--base oci-layout:PATH") {
		t.Fatalf("offline without a cache: err = %v", err)
	}
	if _, statErr := os.Stat(filepath.Join(root, "dist", build.ManifestFile)); statErr == nil {
		t.Error("dist/manifest.json exists after the failed build")
	}
	// update-base offline fails and leaves the lock alone.
	if _, err := UpdateBase(context.Background(), root, fixedEnv, nil); err == nil || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("offline update-base: err = %v", err)
	}
	if after, _ := build.ReadLock(imagesDir); after.Bases[baseRef].Digest != second {
		t.Fatal("offline update-base changed the lock")
	}
}

func TestRepositoryLockPinsTheSpecsBase(t *testing.T) {
	// The committed lock covers exactly the base the committed specs name,
	// so the README's default build-all has a digest to use.
	lock, err := build.ReadLock(filepath.Join("..", "..", "images"))
	if err != nil {
		t.Fatal(err)
	}
	e, ok := lock.Bases["gcr.io/distroless/static-debian12:nonroot"]
	if !ok || len(lock.Bases) != 1 || !strings.HasPrefix(e.Digest, "sha256:") {
		t.Fatalf("images/base.lock.json: %+v", lock)
	}
}

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
)

// update-base moves the base lock and the Dagger module's Go image
// together (Debian's docker-registry serving golang:1.27.3-trixie), and
// when one of them cannot be resolved it writes neither.
func TestUpdateBasePinsTheDaggerGoImage(t *testing.T) {
	root := fixtureRepo(t)
	for _, f := range []string{"broken.yaml", "missing.yaml"} {
		os.Remove(filepath.Join(root, "images", f))
	}
	baseRef := testreg.InProcess(t) + "/distroless/static:nonroot"
	baseDigest := testreg.PushRandomIndex(t, baseRef)
	okSpec := strings.Replace(spec("ok", "./cmd/ok"), "example.com/base:1", baseRef, 1)
	if err := os.WriteFile(filepath.Join(root, "images", "ok.yaml"), []byte(okSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	goRef := testreg.Distribution(t) + "/golang:1.27.3-trixie"
	goDigest := testreg.PushRandomIndex(t, goRef)
	src, err := os.ReadFile(filepath.Join("..", "..", build.DaggerModuleFile))
	if err != nil {
		t.Fatal(err)
	}
	repoPin, err := build.ReadGoImagePin(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	src = bytes.Replace(src, []byte(`+default="`+repoPin.String()+`"`), []byte(`+default="`+goRef+`"`), 1)
	module := filepath.Join(root, build.DaggerModuleFile)
	os.MkdirAll(filepath.Dir(module), 0o755)
	if err := os.WriteFile(module, src, 0o644); err != nil {
		t.Fatal(err)
	}

	var progress bytes.Buffer
	changes, err := UpdateBase(context.Background(), root, fixedEnv, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 || changes[0].New != baseDigest || changes[1].Ref != goRef || changes[1].New != goDigest ||
		!strings.Contains(progress.String(), goRef+" (ci/main.go, the Dagger module's Go image) pinned to "+goDigest) {
		t.Fatalf("changes %+v\nprogress:\n%s", changes, progress.String())
	}
	if p, err := build.ReadGoImagePin(root); err != nil || p.String() != goRef+"@"+goDigest {
		t.Fatalf("ci/main.go's Go image: %+v, %v", p, err)
	}
	progress.Reset()
	if _, err := UpdateBase(context.Background(), root, fixedEnv, &progress); err != nil || !strings.Contains(progress.String(), "Go image) unchanged at "+goDigest) {
		t.Fatalf("second run: %v\n%s", err, progress.String())
	}

	// The Go image's registry does not answer: the base's tag moved, but
	// neither file changes.
	testreg.PushRandomIndex(t, baseRef)
	lockBefore, _ := os.ReadFile(filepath.Join(root, "images", build.LockFile))
	moduleBefore, _ := os.ReadFile(module)
	os.WriteFile(module, bytes.Replace(moduleBefore, []byte(goRef), []byte("127.0.0.1:1/golang:1.27.3-trixie"), 1), 0o644)
	moduleBefore, _ = os.ReadFile(module)
	_, err = UpdateBase(context.Background(), root, fixedEnv, nil)
	if err == nil || !strings.Contains(err.Error(), "cannot resolve the Dagger module's Go image 127.0.0.1:1/golang:1.27.3-trixie") || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("unreachable Go image: err = %v", err)
	}
	lockAfter, _ := os.ReadFile(filepath.Join(root, "images", build.LockFile))
	moduleAfter, _ := os.ReadFile(module)
	if !bytes.Equal(lockBefore, lockAfter) || !bytes.Equal(moduleBefore, moduleAfter) {
		t.Error("a failed update-base changed images/base.lock.json or ci/main.go")
	}
}

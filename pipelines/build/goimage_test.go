package build

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// daggerModule copies the repository's ci/main.go into a new root with its
// goImage default replaced by ref, so the rewrite runs on the real file.
func daggerModule(t *testing.T, ref string) (root string, before []byte) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", DaggerModuleFile))
	if err != nil {
		t.Fatal(err)
	}
	real, err := ReadGoImagePin(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	src = bytes.Replace(src, []byte(`+default="`+real.String()+`"`), []byte(`+default="`+ref+`"`), 1)
	root = t.TempDir()
	file := filepath.Join(root, DaggerModuleFile)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, src, 0o644); err != nil {
		t.Fatal(err)
	}
	return root, src
}

// update-base's rewrite of the Dagger module's Go image, against Debian's
// docker-registry serving an index as golang:1.27.3-trixie: pinned, moved
// when the tag moves, and every other byte of ci/main.go kept.
func TestGoImagePinFollowsTheTag(t *testing.T) {
	host := testreg.Distribution(t)
	ref := host + "/golang:1.27.3-trixie"
	first := testreg.PushRandomIndex(t, ref)
	root, before := daggerModule(t, ref)

	p, err := ReadGoImagePin(root)
	if err != nil || p.Tag != ref || p.Digest != "" {
		t.Fatalf("ReadGoImagePin = %+v, %v; want tag %s, no digest", p, err, ref)
	}
	ctx := context.Background()
	pin := func(want string) {
		t.Helper()
		got, err := p.Resolve(ctx, authn.DefaultKeychain)
		if err != nil || got != want {
			t.Fatalf("Resolve = %s, %v; want %s", got, err, want)
		}
		if err := p.Write(got); err != nil {
			t.Fatal(err)
		}
		after, _ := os.ReadFile(p.File)
		wantFile := bytes.Replace(before, []byte(`+default="`+ref+`"`), []byte(`+default="`+ref+"@"+want+`"`), 1)
		if !bytes.Equal(after, wantFile) {
			t.Fatalf("ci/main.go after pinning %s differs from the original in more than the pragma", want)
		}
		if reread, err := ReadGoImagePin(root); err != nil || reread.String() != ref+"@"+want {
			t.Fatalf("reread %+v, %v", reread, err)
		}
	}
	pin(first)
	second := testreg.PushRandomIndex(t, ref) // the tag moves
	if second == first {
		t.Fatal("the second index has the first's digest")
	}
	pin(second)

	// A single image, not an index: refused, naming the file.
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	single := host + "/golang:single"
	singleRef, err := name.ParseReference(single)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(singleRef, img); err != nil {
		t.Fatal(err)
	}
	if _, err := (&GoImagePin{File: p.File, Tag: single}).Resolve(ctx, authn.DefaultKeychain); err == nil || !strings.Contains(err.Error(), "not a multi-platform index") {
		t.Errorf("single image: err = %v", err)
	}
	// Unreachable: the error names the image and says nothing was written.
	if _, err := (&GoImagePin{File: p.File, Tag: "127.0.0.1:1/golang:1.27.3-trixie"}).Resolve(ctx, authn.DefaultKeychain); err == nil ||
		!strings.Contains(err.Error(), "127.0.0.1:1/golang:1.27.3-trixie") || !strings.Contains(err.Error(), "nothing was written") {
		t.Errorf("unreachable: err = %v", err)
	}
}

func TestReadGoImagePinErrors(t *testing.T) {
	if p, err := ReadGoImagePin(t.TempDir()); p != nil || err != nil {
		t.Errorf("no Dagger module: %+v, %v; want nil, nil", p, err)
	}
	root, src := daggerModule(t, "golang:1.27.3-trixie")
	file := filepath.Join(root, DaggerModuleFile)
	for what, c := range map[string]struct{ from, to, want string }{
		"pragma gone": {`+default="golang:1.27.3-trixie"`, `+optional`, "found 0"},
		"bad digest":  {`golang:1.27.3-trixie"`, `golang:1.27.3-trixie@sha256:nope"`, "remove the @digest"},
		"not a tag":   {`golang:1.27.3-trixie"`, `Golang:UPPER:case"`, "want an image tag"},
	} {
		os.WriteFile(file, bytes.Replace(src, []byte(c.from), []byte(c.to), 1), 0o644)
		if _, err := ReadGoImagePin(root); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), file) {
			t.Errorf("%s: err = %v, want %q naming %s", what, err, c.want, file)
		}
	}
}

// The committed module names the Go 1.27.3 image, by tag and by a
// well-formed digest once update-base could resolve it.
func TestRepositoryGoImagePin(t *testing.T) {
	p, err := ReadGoImagePin(filepath.Join("..", ".."))
	if err != nil || p == nil || !strings.HasPrefix(p.Tag, "golang:1.27.3-") {
		t.Fatalf("ReadGoImagePin = %+v, %v", p, err)
	}
}

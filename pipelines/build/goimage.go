package build

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// DaggerModuleFile is the Dagger module's source; its constructor's goImage
// default is the Go toolchain image every function runs the CLI in.
const DaggerModuleFile = "ci/main.go"

// goImageDefault is that default: a Dagger pragma right above the
// argument. Dagger reads defaults only from pragmas, so update-base pins
// the image by rewriting this line (there is no lock file Dagger reads).
var goImageDefault = regexp.MustCompile(`(?m)^(\t// \+default=")([^"]*)("\n\tgoImage string,)$`)

// GoImagePin is the Go image reference in the Dagger module: a tag, and
// the digest it is pinned to ("" while pinned by tag only).
type GoImagePin struct {
	File   string // the Dagger module's source, root/ci/main.go
	Tag    string // e.g. golang:1.27.3-trixie
	Digest string // e.g. sha256:…, or ""
}

// String is the pragma's value: tag, or tag@digest.
func (p *GoImagePin) String() string {
	if p.Digest == "" {
		return p.Tag
	}
	return p.Tag + "@" + p.Digest
}

// ReadGoImagePin reads root/ci/main.go's goImage default; (nil, nil) when
// the repository has no Dagger module.
func ReadGoImagePin(root string) (*GoImagePin, error) {
	file := filepath.Join(root, DaggerModuleFile)
	src, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m := goImageDefault.FindAllSubmatch(src, -1)
	if len(m) != 1 {
		return nil, fmt.Errorf("%s: found %d `// +default=\"…\"` pragmas right above the constructor's `goImage string,` argument, want 1 (update-base pins the Go image there; restore that line)", file, len(m))
	}
	tag, digest, _ := strings.Cut(string(m[0][2]), "@")
	if _, err := name.NewTag(tag); err != nil {
		return nil, fmt.Errorf("%s: goImage default %q: %w (want an image tag such as golang:1.27.3-trixie, optionally @sha256:…)", file, m[0][2], err)
	}
	if digest != "" {
		if _, err := name.NewDigest(tag + "@" + digest); err != nil {
			return nil, fmt.Errorf("%s: goImage default %q: %w (run `go run . update-base`, or remove the @digest)", file, m[0][2], err)
		}
	}
	return &GoImagePin{File: file, Tag: tag, Digest: digest}, nil
}

// Resolve returns the tag's current digest. Like the bases, the image must
// be a multi-platform index: the Dagger engine may run on amd64 or arm64.
func (p *GoImagePin) Resolve(ctx context.Context, kc authn.Keychain) (string, error) {
	tag, err := name.NewTag(p.Tag)
	if err != nil {
		return "", err
	}
	desc, err := remote.Head(tag, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc))
	if err != nil {
		return "", fmt.Errorf("update-base: cannot resolve the Dagger module's Go image %s (%s): %w (update-base needs its registry; nothing was written)", p.Tag, p.File, err)
	}
	if !desc.MediaType.IsIndex() {
		return "", fmt.Errorf("update-base: the Dagger module's Go image %s is a single image (%s), not a multi-platform index; name a tag that lists linux/amd64 and linux/arm64 in %s", p.Tag, desc.MediaType, p.File)
	}
	return desc.Digest.String(), nil
}

// Write rewrites the pragma to tag@digest, leaving the rest of the file
// byte for byte.
func (p *GoImagePin) Write(digest string) error {
	src, err := os.ReadFile(p.File)
	if err != nil {
		return err
	}
	if n := len(goImageDefault.FindAllIndex(src, -1)); n != 1 {
		return fmt.Errorf("%s: found %d goImage default pragmas, want 1 (the file changed while update-base ran?)", p.File, n)
	}
	pinned := &GoImagePin{File: p.File, Tag: p.Tag, Digest: digest}
	out := goImageDefault.ReplaceAllFunc(src, func(m []byte) []byte {
		s := goImageDefault.FindSubmatch(m)
		return append(append(append([]byte{}, s[1]...), pinned.String()...), s[3]...)
	})
	info, err := os.Stat(p.File)
	if err != nil {
		return err
	}
	tmp := p.File + ".tmp"
	if err := os.WriteFile(tmp, out, info.Mode().Perm()); err != nil {
		return err
	}
	if err := os.Rename(tmp, p.File); err != nil {
		os.Remove(tmp)
		return err
	}
	p.Digest = digest
	return nil
}

// Package registry is the pipeline's publish step (ko's split: build makes
// images, publish puts them in a registry). It pushes every image by digest
// first and tags them only when all digests are in, so a registry that
// refuses part of a release leaves no tag pointing at a half-published set.
package registry

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Env variables with registry credentials; they win over the Docker config.
const (
	EnvUsername = "DARKTOWER_REGISTRY_USERNAME"
	EnvPassword = "DARKTOWER_REGISTRY_PASSWORD"
)

// envKeychain answers with the credentials from the environment, for any
// registry, when both are set.
type envKeychain struct{ getenv func(string) string }

func (k envKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	u, p := k.getenv(EnvUsername), k.getenv(EnvPassword)
	if u == "" || p == "" {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: u, Password: p}, nil
}

// Keychain is env credentials, then the Docker config (~/.docker/config.json).
func Keychain(getenv func(string) string) authn.Keychain {
	if getenv == nil {
		getenv = os.Getenv
	}
	return authn.NewMultiKeychain(envKeychain{getenv}, authn.DefaultKeychain)
}

// Pushed is one published image.
type Pushed struct {
	Service string `json:"service"`
	Ref     string `json:"ref"` // repo:tag@digest
}

// Push publishes images under prefix (e.g. registry.example.com/darktower),
// as <prefix>/<service>:<version>.
func Push(ctx context.Context, images []*build.Image, prefix string, kc authn.Keychain, progress io.Writer) ([]Pushed, error) {
	prefix = strings.TrimSuffix(prefix, "/")
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
	type target struct {
		img *build.Image
		tag name.Tag
		dig name.Digest
	}
	var targets []target
	for _, img := range images {
		repo, err := name.NewRepository(prefix + "/" + img.Service)
		if err != nil {
			return nil, fmt.Errorf("--push %q: not a registry/repository prefix: %w", prefix, err)
		}
		_, version, _ := strings.Cut(img.Tag, ":")
		targets = append(targets, target{img: img, tag: repo.Tag(version), dig: repo.Digest(img.Digest)})
	}
	for _, t := range targets {
		start := time.Now()
		if err := remote.WriteIndex(t.dig, t.img.Index, opts...); err != nil {
			return nil, fmt.Errorf("pushing %s to %s: %w (no tag was written)", t.img.Service, t.dig.Context(), err)
		}
		if progress != nil {
			fmt.Fprintf(progress, "push: %-20s %s in %s\n", t.img.Service, t.dig, time.Since(start).Round(time.Millisecond))
		}
	}
	var out []Pushed
	for _, t := range targets {
		if err := remote.Tag(t.tag, t.img.Index, opts...); err != nil {
			return out, fmt.Errorf("tagging %s: %w", t.tag, err)
		}
		out = append(out, Pushed{Service: t.img.Service, Ref: t.tag.String() + "@" + t.img.Digest})
	}
	return out, nil
}

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

// Env variables with the push registry's credentials; they win over the
// Docker config for that registry and are given to no other.
const (
	EnvUsername = "DARKTOWER_REGISTRY_USERNAME"
	EnvPassword = "DARKTOWER_REGISTRY_PASSWORD"
	// Promotion reads from another registry (the release's): its
	// credentials, given to that registry only.
	EnvSourceUsername = "DARKTOWER_SOURCE_REGISTRY_USERNAME"
	EnvSourcePassword = "DARKTOWER_SOURCE_REGISTRY_PASSWORD"
)

// envKeychain answers with the credentials from the environment, when
// both are set, for one registry only (host: what name.Registry's
// RegistryStr gives, e.g. ghcr.io, index.docker.io, localhost:5000).
type envKeychain struct {
	getenv           func(string) string
	host             string
	userVar, passVar string
}

func (k envKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	u, p := k.getenv(k.userVar), k.getenv(k.passVar)
	if u == "" || p == "" || k.host == "" || r.RegistryStr() != k.host {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: u, Password: p}, nil
}

// Host is the registry of a repository prefix (ghcr.io/darktower) or an
// image reference (ghcr.io/darktower/x:1), "" when it parses as neither.
func Host(target string) string {
	if target == "" {
		return ""
	}
	if ref, err := name.ParseReference(target); err == nil {
		return ref.Context().RegistryStr()
	}
	if repo, err := name.NewRepository(target); err == nil {
		return repo.RegistryStr()
	}
	return ""
}

// Keychain is the environment's credentials for target's registry only
// (the --push prefix, or the image verify reads), then the Docker config
// (~/.docker/config.json, per registry). Every other registry — the
// base's, e.g. gcr.io, which answers unexpected credentials with 401 even
// for public images — is asked anonymously unless the Docker config has
// an entry for it.
func Keychain(getenv func(string) string, target string) authn.Keychain {
	if getenv == nil {
		getenv = os.Getenv
	}
	return authn.NewMultiKeychain(envKeychain{getenv, Host(target), EnvUsername, EnvPassword}, authn.DefaultKeychain)
}

// PromotionKeychain is Keychain for a promotion: the push registry's
// credentials (EnvUsername, EnvPassword) for to's registry, the source
// registry's (EnvSourceUsername, EnvSourcePassword) for from's, then the
// Docker config. When both are the same registry, to's credentials are
// used for both.
func PromotionKeychain(getenv func(string) string, from, to string) authn.Keychain {
	if getenv == nil {
		getenv = os.Getenv
	}
	return authn.NewMultiKeychain(envKeychain{getenv, Host(to), EnvUsername, EnvPassword},
		envKeychain{getenv, Host(from), EnvSourceUsername, EnvSourcePassword}, authn.DefaultKeychain)
}

// LowercasePrefix lowercases the repository path of a --push prefix
// (ghcr.io/DarkTower → ghcr.io/darktower): a registry refuses capitals in
// repository names, and GitHub keeps them in an owner's name. The
// registry host is left as given.
func LowercasePrefix(prefix string) string {
	host, path, ok := strings.Cut(prefix, "/")
	if !ok {
		return strings.ToLower(prefix)
	}
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		return strings.ToLower(prefix) // no host: Docker Hub's namespace
	}
	return host + "/" + strings.ToLower(path)
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

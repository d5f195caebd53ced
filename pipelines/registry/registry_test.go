package registry

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// builtImages builds two tiny services on the skeleton base.
func builtImages(t *testing.T) []*build.Image {
	t.Helper()
	root := t.TempDir()
	for name, body := range map[string]string{
		"fx/go.mod":          "module example.com/fx\n\ngo 1.27\n",
		"fx/cmd/one/main.go": "package main\n\nfunc main() { println(1) }\n",
		"fx/cmd/two/main.go": "package main\n\nfunc main() { println(2) }\n",
	} {
		p := filepath.Join(root, name)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	amd64 := catalog.Platform{OS: "linux", Arch: "amd64"}
	epoch := time.Unix(1767225600, 0)
	base, err := build.SkeletonBase([]catalog.Platform{amd64}, "", epoch)
	if err != nil {
		t.Fatal(err)
	}
	var specs []*catalog.Spec
	for _, n := range []string{"one", "two"} {
		specs = append(specs, &catalog.Spec{Name: n, Module: "fx", Main: "./cmd/" + n, Binary: "/usr/local/bin/" + n,
			Ports: []string{"8080/tcp"}, Platforms: []catalog.Platform{amd64}})
	}
	res, err := build.Run(context.Background(), build.Options{Root: root, Specs: specs, Base: base, Epoch: epoch, Version: "1.0.0", Revision: "r"})
	if err != nil {
		t.Fatal(err)
	}
	return res.Images
}

func TestPushPullRoundTrip(t *testing.T) {
	images := builtImages(t)
	for name, host := range map[string]string{"in-process": testreg.InProcess(t), "docker-registry": testreg.Distribution(t)} {
		var progress bytes.Buffer
		pushed, err := Push(context.Background(), images, host+"/darktower", authn.DefaultKeychain, &progress)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(pushed) != 2 || !strings.Contains(progress.String(), "push: one") {
			t.Fatalf("%s: pushed %+v, progress %q", name, pushed, progress.String())
		}
		for i, img := range images {
			tag, _ := name2tag(host + "/darktower/" + img.Service + ":1.0.0")
			idx, err := remote.Index(tag)
			if err != nil {
				t.Fatalf("%s: pulling %s: %v", name, tag, err)
			}
			d, _ := idx.Digest()
			if d.String() != img.Digest || !strings.HasSuffix(pushed[i].Ref, "@"+img.Digest) {
				t.Errorf("%s: %s pulled as %s, built as %s", name, img.Service, d, img.Digest)
			}
			im, _ := idx.IndexManifest()
			pulled, err := idx.Image(im.Manifests[0].Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := pulled.ConfigFile()
			if err != nil || cf.Config.User != "65532:65532" {
				t.Errorf("%s: pulled config %v %v", name, err, cf)
			}
		}
	}
}

func name2tag(s string) (name.Tag, error) { return name.NewTag(s) }

func TestRefusedPushLeavesNoTags(t *testing.T) {
	images := builtImages(t)
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	// The registry accepts "one" and refuses every manifest for "two".
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/darktower/two/manifests/") {
			http.Error(w, `{"errors":[{"code":"DENIED","message":"quota exceeded"}]}`, http.StatusForbidden)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	_, err := Push(context.Background(), images, host+"/darktower", authn.DefaultKeychain, nil)
	if err == nil || !strings.Contains(err.Error(), "pushing two") || !strings.Contains(err.Error(), "no tag was written") {
		t.Fatalf("err = %v", err)
	}
	for _, svc := range []string{"one", "two"} {
		tag, _ := name.NewTag(host + "/darktower/" + svc + ":1.0.0")
		if _, err := remote.Head(tag); err == nil {
			t.Errorf("%s is tagged although the release was refused", svc)
		}
	}
}

func TestEnvCredentialsWinAndAreUsed(t *testing.T) {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var sawAuth atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "ci-bot" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		sawAuth.Store(true)
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	images := builtImages(t)[:1]
	if _, err := Push(context.Background(), images, host+"/darktower", Keychain(func(string) string { return "" }, host+"/darktower"), nil); err == nil {
		t.Fatal("push without credentials succeeded against an authenticating registry")
	}
	env := map[string]string{EnvUsername: "ci-bot", EnvPassword: "s3cret"}
	if _, err := Push(context.Background(), images, host+"/darktower", Keychain(func(k string) string { return env[k] }, host+"/darktower"), nil); err != nil || !sawAuth.Load() {
		t.Fatalf("push with env credentials: %v (auth seen %v)", err, sawAuth.Load())
	}
}

// The environment's credentials go to the push registry's host only.
func TestEnvCredentialsGoOnlyToThePushRegistry(t *testing.T) {
	env := map[string]string{EnvUsername: "ci-bot", EnvPassword: "s3cret"}
	kc := Keychain(func(k string) string { return env[k] }, "ghcr.io/darktower")
	for ref, want := range map[string]bool{"ghcr.io/darktower/ac-service:1": true, "gcr.io/distroless/static:nonroot": false,
		"index.docker.io/library/debian:13": false, "localhost:5000/x:1": false} {
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		auth, err := envKeychain{func(k string) string { return env[k] }, Host("ghcr.io/darktower"), EnvUsername, EnvPassword}.Resolve(r.Context())
		if err != nil {
			t.Fatal(err)
		}
		if got := auth != authn.Anonymous; got != want {
			t.Errorf("%s: credentials given: %v, want %v", ref, got, want)
		}
		if _, err := kc.Resolve(r.Context()); err != nil {
			t.Fatal(err)
		}
	}
	for target, host := range map[string]string{"ghcr.io/darktower": "ghcr.io", "localhost:5000/a/b": "localhost:5000",
		"ghcr.io/darktower/x:1@sha256:" + strings.Repeat("a", 64): "ghcr.io", "darktower": "index.docker.io", "": ""} {
		if got := Host(target); got != host {
			t.Errorf("Host(%q) = %q, want %q", target, got, host)
		}
	}
}

// A promotion's two sets of credentials each go to their registry only.
func TestPromotionCredentialsGoEachToTheirRegistry(t *testing.T) {
	env := map[string]string{EnvUsername: "prod-bot", EnvPassword: "prod-secret", EnvSourceUsername: "ci-bot", EnvSourcePassword: "ci-secret"}
	kc := PromotionKeychain(func(k string) string { return env[k] }, "ghcr.io/darktower", "registry.example.com/prod")
	for ref, want := range map[string]string{"ghcr.io/darktower/ac-service:v1.0.0": "ci-bot", "registry.example.com/prod/ac-service:v1.0.0": "prod-bot",
		"gcr.io/distroless/static:nonroot": ""} {
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		auth, err := kc.Resolve(r.Context())
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := auth.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Username != want {
			t.Errorf("%s: credentials of %q, want %q", ref, cfg.Username, want)
		}
	}
}

func TestLowercasePrefix(t *testing.T) {
	for in, want := range map[string]string{"ghcr.io/DarkTower": "ghcr.io/darktower", "Localhost:5000/A/B": "Localhost:5000/a/b",
		"localhost/Org": "localhost/org", "DarkTower": "darktower", "Org/Repo": "org/repo", "ghcr.io/darktower": "ghcr.io/darktower"} {
		if got := LowercasePrefix(in); got != want {
			t.Errorf("LowercasePrefix(%q) = %q, want %q", in, got, want)
		}
	}
}

package flow

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/darktower/delivery/pipelines/registry"
	"github.com/darktower/delivery/pipelines/sign"
)

// refusesCredentials puts gcr.io's behaviour in front of a real registry:
// its /v2/ asks for a bearer token, its token endpoint gives one to an
// anonymous caller and answers 401 to any credentials (gcr.io does so for
// credentials it does not know, even for public images). refused counts
// the requests that carried credentials.
func refusesCredentials(t *testing.T, backend string, refused *atomic.Int32) string {
	target, _ := url.Parse("http://" + backend)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			if r.Header.Get("Authorization") != "" {
				refused.Add(1)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"token":"anonymous","access_token":"anonymous"}`))
			return
		}
		if r.Header.Get("Authorization") != "Bearer anonymous" {
			if strings.HasPrefix(r.Header.Get("Authorization"), "Basic ") {
				refused.Add(1)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		r.Header.Del("Authorization")
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// DARKTOWER_REGISTRY_* are the push registry's credentials: a release
// pushing to an authenticating registry (Debian's docker-registry with
// htpasswd) builds on a base from a registry that refuses any credentials.
func TestRegistryCredentialsGoOnlyToThePushRegistry(t *testing.T) {
	root := fixtureRepo(t)
	baseBackend := testreg.Distribution(t)
	publishBase(t, root, baseBackend+"/distroless/static:nonroot", "base.1")
	var refused atomic.Int32
	baseRef := refusesCredentials(t, baseBackend, &refused) + "/distroless/static:nonroot"
	push := testreg.DistributionWithAuth(t, "ci-bot", "s3cret")
	env := func(k string) string {
		switch k {
		case registry.EnvUsername:
			return "ci-bot"
		case registry.EnvPassword:
			return "s3cret"
		}
		return fixedEnv(k)
	}
	if _, err := sign.DevKey(testDevKeys); err != nil {
		t.Fatal(err)
	}
	m, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: filepath.Join(root, "dist"),
		Base: baseRef, CacheDir: t.TempDir(), Version: "1.0.0", Env: env, VulnDB: testDB, Key: filepath.Join(testDevKeys, "cosign.key"),
		Push: push + "/DarkTower"}) // an owner as GitHub spells it: lowercased
	if err != nil {
		t.Fatalf("build with credentials for %s and a base from %s: %v (credentials refused by the base registry %d time(s))", push, baseRef, err, refused.Load())
	}
	if refused.Load() != 0 {
		t.Errorf("the base registry was sent credentials %d time(s)", refused.Load())
	}
	if !strings.HasPrefix(m.Images[0].Pushed, push+"/darktower/ok:1.0.0@") {
		t.Errorf("pushed %q", m.Images[0].Pushed)
	}
	// The push registry does need them.
	os.RemoveAll(filepath.Join(root, "dist"))
	_, err = BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: filepath.Join(root, "dist"),
		Base: baseRef, CacheDir: t.TempDir(), Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, Key: filepath.Join(testDevKeys, "cosign.key"),
		Push: push + "/darktower"})
	if err == nil || !strings.Contains(err.Error(), "pushing ok") {
		t.Errorf("push without credentials to an authenticating registry: %v", err)
	}
}

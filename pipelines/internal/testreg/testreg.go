// Package testreg starts registries for tests: go-containerregistry's
// in-process one, and Debian's docker-registry (the CNCF distribution
// server) on loopback.
package testreg

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"
)

// InProcess starts go-containerregistry's registry; returns host:port.
func InProcess(t testing.TB) string {
	host, _ := InProcessStoppable(t)
	return host
}

// InProcessStoppable is InProcess with a stop function, for tests of what
// happens once the registry is gone.
func InProcessStoppable(t testing.TB) (host string, stop func()) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), srv.Close
}

// Distribution starts /usr/bin/docker-registry with filesystem storage on a
// free loopback port; returns host:port. The README's test command installs
// the package; without it the test fails and says so.
func Distribution(t testing.TB) string {
	t.Helper()
	return distribution(t, "", "")
}

// DistributionWithAuth is Distribution requiring HTTP basic
// authentication (its htpasswd auth) as user with password.
func DistributionWithAuth(t testing.TB, user, password string) string {
	t.Helper()
	return distribution(t, user, password)
}

// Server is a docker-registry that a test can stop and start again (on
// the same address, with the same storage).
type Server struct {
	Addr string
	t    testing.TB
	bin  string
	dir  string
	cmd  *exec.Cmd
	logf *os.File
	auth bool
}

// DistributionServer is Distribution as a Server.
func DistributionServer(t testing.TB) *Server {
	t.Helper()
	s := newServer(t, "", "")
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Stop kills the registry (what a registry going away mid-push looks like).
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.logf.Close()
	s.cmd = nil
}

// Start starts the registry and waits until it answers.
func (s *Server) Start() {
	t := s.t
	t.Helper()
	logf, _ := os.OpenFile(filepath.Join(s.dir, "registry.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	cmd := exec.Command(s.bin, "serve", filepath.Join(s.dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd, s.logf = cmd, logf
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + s.Addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || (s.auth && resp.StatusCode == http.StatusUnauthorized) {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(s.dir, "registry.log"))
			t.Fatalf("docker-registry did not start: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func distribution(t testing.TB, user, password string) string {
	t.Helper()
	s := newServer(t, user, password)
	s.Start()
	t.Cleanup(s.Stop)
	return s.Addr
}

func newServer(t testing.TB, user, password string) *Server {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry not found: install Debian's docker-registry package (the README's test command does)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	body := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	if user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		body += fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", htpasswd)
	}
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Server{Addr: addr, t: t, bin: bin, dir: dir, auth: user != ""}
}

// Storage is the registry's filesystem storage (what a test tampers with
// to play a compromised registry).
func (s *Server) Storage() string { return filepath.Join(s.dir, "data") }

// PushRandomIndex pushes a random two-image index to ref (a tag) and
// returns its digest: a stand-in for a multi-platform image.
func PushRandomIndex(t testing.TB, ref string) string {
	t.Helper()
	idx, err := random.Index(64, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

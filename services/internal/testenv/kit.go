package testenv

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/opskit"
)

// SyncBuffer is a goroutine-safe log sink tests can read.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Kit returns a service kit whose JSON logs go to the returned buffer and
// whose HTTP client trusts caFile (empty: system roots only).
func Kit(t testing.TB, service, caFile string) (*opskit.Kit, *SyncBuffer) {
	t.Helper()
	logs := &SyncBuffer{}
	kit, err := opskit.NewKit(opskit.Common{Service: service, TLSCAFile: caFile, LogLevel: -4}, logs)
	if err != nil {
		t.Fatal(err)
	}
	return kit, logs
}

// Issuer publishes a JWKS over TLS and signs tokens with its key, as AC
// does, for tests of the services that verify AC's tokens.
type Issuer struct {
	Signer authn.Signer
	Server *httptest.Server
}

// NewIssuer starts the JWKS server; its certificate is trusted by Client().
func NewIssuer(t testing.TB) *Issuer {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss := &Issuer{Signer: authn.Signer{KeyID: "test-key", Key: priv, Issuer: "https://ac-service", TTL: 5 * time.Minute}}
	set, _ := json.Marshal(authn.JWKS{Keys: []authn.JWK{authn.PublicJWK("test-key", pub)}})
	iss.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(set)
	}))
	t.Cleanup(iss.Server.Close)
	return iss
}

// JWKSURL is the key set's URL.
func (i *Issuer) JWKSURL() string { return i.Server.URL + "/.well-known/jwks.json" }

// Token issues a token for audience; the subject owns instances.
func (i *Issuer) Token(t testing.TB, subject, audience string, instances ...string) string {
	tok, _, err := i.Signer.Issue(subject, audience, time.Now(), instances...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// CallJSON sends body (a string is sent as is, anything else as JSON) with
// an optional bearer token and returns the status, the response body and the
// HTTP major version it was served over.
func CallJSON(t testing.TB, c *http.Client, method, url, token string, body any) (int, []byte, int) {
	t.Helper()
	var payload []byte
	switch b := body.(type) {
	case nil:
	case string:
		payload = []byte(b)
	default:
		payload, _ = json.Marshal(b)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), resp.ProtoMajor
}

// MainWith starts a server once for a package's tests (start is
// StartPostgres or StartRedis), hands it to set, runs the tests, stops the
// server and exits with the tests' status.
func MainWith[S interface{ Stop() }](m *testing.M, start func() (S, error), set func(S)) {
	srv, err := start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: starting a server for the tests: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(1)
	}
	set(srv)
	code := m.Run()
	srv.Stop()
	os.Exit(code)
}

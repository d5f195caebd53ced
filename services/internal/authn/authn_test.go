package authn

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwksServer serves a mutable key set and counts fetches.
type jwksServer struct {
	mu      sync.Mutex
	set     JWKS
	fetches atomic.Int32
	srv     *httptest.Server
}

func newJWKSServer(t *testing.T, keys ...JWK) *jwksServer {
	j := &jwksServer{set: JWKS{Keys: keys}}
	j.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		j.fetches.Add(1)
		j.mu.Lock()
		defer j.mu.Unlock()
		_ = json.NewEncoder(w).Encode(j.set)
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func (j *jwksServer) add(k JWK) { j.mu.Lock(); j.set.Keys = append(j.set.Keys, k); j.mu.Unlock() }

func newKey(t *testing.T, kid string) (Signer, JWK) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Signer{KeyID: kid, Key: priv, Issuer: "https://ac-service", TTL: 10 * time.Minute}, PublicJWK(kid, pub)
}

func verifierFor(j *jwksServer) *Verifier {
	ks := &KeySet{URL: j.srv.URL, Client: j.srv.Client(), RefreshInterval: time.Hour}
	return &Verifier{Keys: ks, Issuer: "https://ac-service", Audience: "global-controller"}
}

func TestIssueThenVerify(t *testing.T) {
	signer, jwk := newKey(t, "k1")
	v := verifierFor(newJWKSServer(t, jwk))
	tok, exp, err := signer.Issue("meeting-controller", "global-controller", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d > MaxTokenTTL {
		t.Fatalf("expiry %s away exceeds %s", d, MaxTokenTTL)
	}
	claims, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	if claims.Subject != "meeting-controller" || claims.Issuer != "https://ac-service" {
		t.Fatalf("claims = %+v", claims)
	}
	parsed, _, _ := jwt.NewParser().ParseUnverified(tok, &jwt.RegisteredClaims{})
	if parsed.Header["kid"] != "k1" || parsed.Header["alg"] != "EdDSA" {
		t.Fatalf("header = %v", parsed.Header)
	}
}

func TestVerifyRefusesBadTokens(t *testing.T) {
	signer, jwk := newKey(t, "k1")
	stranger, _ := newKey(t, "k1") // same kid, different key: a forged signature
	v := verifierFor(newJWKSServer(t, jwk))
	now := time.Now()
	issue := func(s Signer, sub, aud string, at time.Time) string {
		tok, _, err := s.Issue(sub, aud, at)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := issue(signer, "mc", "global-controller", now)
	parts := strings.Split(good, ".")
	tamperedPayload := parts[0] + "." + strings.TrimRight(parts[1], "A") + "B." + parts[2]

	otherIssuer := signer
	otherIssuer.Issuer = "https://evil"
	unknownKid := signer
	unknownKid.KeyID = "k-unknown"

	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer: "https://ac-service", Audience: jwt.ClaimStrings{"global-controller"},
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))})
	hs.Header["kid"] = "k1"
	hsTok, _ := hs.SignedString([]byte(jwk.X))

	long := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.RegisteredClaims{
		Issuer: "https://ac-service", Audience: jwt.ClaimStrings{"global-controller"},
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))})
	long.Header["kid"] = "k1"
	longTok, _ := long.SignedString(signer.Key)

	cases := map[string]string{
		"tampered payload":    tamperedPayload,
		"forged signature":    issue(stranger, "mc", "global-controller", now),
		"expired":             issue(signer, "mc", "global-controller", now.Add(-time.Hour)),
		"wrong audience":      issue(signer, "mc", "meeting-controller", now),
		"wrong issuer":        issue(otherIssuer, "mc", "global-controller", now),
		"unknown kid":         issue(unknownKid, "mc", "global-controller", now),
		"HS256 alg confusion": hsTok,
		"lifetime over 15m":   longTok,
		"garbage":             "not-a-jwt",
	}
	for name, tok := range cases {
		if _, err := v.Verify(context.Background(), tok); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, _, err := (Signer{KeyID: "k", Key: signer.Key, TTL: 16 * time.Minute}).Issue("a", "b", now); err == nil {
		t.Error("a signer issued a token living longer than 15 minutes")
	}
}

func TestUnknownKidRefetchesOnceThenUsesRotatedKey(t *testing.T) {
	_, jwk1 := newKey(t, "k1")
	j := newJWKSServer(t, jwk1)
	v := verifierFor(j)
	v.Keys.MinRefetch = time.Hour
	if err := v.Keys.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	// AC rotates: k2 appears after the verifier's last fetch.
	signer2, jwk2 := newKey(t, "k2")
	j.add(jwk2)
	tok, _, _ := signer2.Issue("mc", "global-controller", time.Now())
	v.Keys.MinRefetch = 0
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("token under rotated key refused: %v", err)
	}
	if n := j.fetches.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2 (initial + one on unknown kid)", n)
	}
	// Refetches for unknown kids are rate-limited: garbage kids cannot make
	// the verifier hammer AC.
	v.Keys.MinRefetch = time.Hour
	stranger, _ := newKey(t, "k-never")
	for range 5 {
		tok, _, _ := stranger.Issue("mc", "global-controller", time.Now())
		_, _ = v.Verify(context.Background(), tok)
	}
	if n := j.fetches.Load(); n != 2 {
		t.Fatalf("fetches = %d after unknown kids, want still 2", n)
	}
}

func TestKeySetFreshness(t *testing.T) {
	_, jwk := newKey(t, "k1")
	j := newJWKSServer(t, jwk)
	ks := &KeySet{URL: j.srv.URL, Client: j.srv.Client()}
	if ks.Fresh(time.Hour) == nil {
		t.Fatal("fresh before any fetch")
	}
	if err := ks.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ks.Fresh(time.Hour); err != nil {
		t.Fatalf("not fresh after fetch: %v", err)
	}
	if ks.Fresh(0) == nil {
		t.Fatal("fresh with zero max age")
	}
}

func TestParseJWKSRejectsMalformedKeys(t *testing.T) {
	for name, body := range map[string]string{
		"not json":    `{`,
		"no ed25519":  `{"keys":[{"kty":"RSA","kid":"r","n":"x","e":"AQAB"}]}`,
		"short x":     `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"AAAA"}]}`,
		"missing kid": `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
	} {
		if _, err := ParseJWKS([]byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRequireAnswers401WithoutDetail(t *testing.T) {
	signer, jwk := newKey(t, "k1")
	v := verifierFor(newJWKSServer(t, jwk))
	var logs bytes.Buffer
	h := v.Require(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("hello " + ClaimsFrom(r.Context()).Subject))
		}))
	good, _, _ := signer.Issue("mc-1", "global-controller", time.Now())
	expired, _, _ := signer.Issue("mc-1", "global-controller", time.Now().Add(-time.Hour))
	for name, c := range map[string]struct {
		header string
		code   int
	}{
		"valid":   {"Bearer " + good, 200},
		"missing": {"", 401},
		"basic":   {"Basic Zm9vOmJhcg==", 401},
		"expired": {"Bearer " + expired, 401},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/x", nil)
		if c.header != "" {
			req.Header.Set("Authorization", c.header)
		}
		h.ServeHTTP(rec, req)
		if rec.Code != c.code {
			t.Errorf("%s: code %d, want %d", name, rec.Code, c.code)
		}
		if c.code == 401 && (strings.Contains(rec.Body.String(), "expired") || rec.Header().Get("WWW-Authenticate") == "") {
			t.Errorf("%s: 401 leaks detail or lacks WWW-Authenticate: %q", name, rec.Body.String())
		}
	}
	if strings.Contains(logs.String(), expired) || strings.Contains(logs.String(), good) {
		t.Error("a token was logged")
	}
}

func TestOwnsInstance(t *testing.T) {
	c := &Claims{Instances: []string{"meeting-controller-*", "mc-e2e"}}
	for id, want := range map[string]bool{
		"meeting-controller-5c7d-abcde": true, "mc-e2e": true, "meeting-controller-": false,
		"mc-e2e2": false, "media-handler-1": false, "": false,
	} {
		if got := c.OwnsInstance(id); got != want {
			t.Errorf("OwnsInstance(%q) = %v", id, got)
		}
	}
	if (&Claims{}).OwnsInstance("x") || (*Claims)(nil).OwnsInstance("x") {
		t.Error("no instances claim owns something")
	}
}

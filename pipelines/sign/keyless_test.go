package sign

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/sigstore/fulcio/pkg/api"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/darktower/delivery/pipelines/registry"
)

// Sigstore cannot be reached here. These tests run keyless signing for
// real up to that boundary: the GitHub Actions token endpoint and Fulcio
// are local servers speaking their published HTTP APIs (Fulcio's backed by
// a test CA); Rekor is a server that refuses, so the signing fails closed.

const (
	workflowIdentity = "https://github.com/darktower/delivery/.github/workflows/release.yml@refs/tags/v1.2.3"
	actionsIssuer    = "https://token.actions.githubusercontent.com"
	tokenSubjectText = "repo:darktower/delivery:ref:refs/tags/v1.2.3"
)

type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test fulcio"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{key, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// fakeJWT is an (unsigned) token with GitHub's claim shape; Fulcio, not the
// pipeline, verifies tokens.
func fakeJWT(claims map[string]string) string {
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	return enc(map[string]string{"alg": "RS256"}) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte("sig"))
}

// actionsTokenServer is GitHub Actions' OIDC token endpoint.
func actionsTokenServer(t *testing.T, token string) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "bearer request-token" || r.URL.Query().Get("audience") != "sigstore" {
			http.Error(w, "bad request token or audience", http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"value": token})
	}))
	t.Cleanup(srv.Close)
	t.Setenv("ACTIONS_ID_TOKEN_REQUEST_URL", srv.URL+"/token?api-version=2.0")
	t.Setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "request-token")
}

// fulcioServer speaks Fulcio's v1 signingCert API: it checks the bearer
// token and the proof of possession, and issues a code-signing certificate
// naming the workflow and the issuer.
func fulcioServer(t *testing.T, ca *testCA, token string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/signingCert" || r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var req api.CertificateRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		pub, err := cryptoutils.UnmarshalPEMToPublicKey(req.PublicKey.Content)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		digest := sha256.Sum256([]byte(tokenSubjectText))
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], req.SignedEmailAddress) {
			http.Error(w, "proof of possession does not verify", http.StatusBadRequest)
			return
		}
		uri, _ := url.Parse(workflowIdentity)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute),
			NotAfter: time.Now().Add(10 * time.Minute), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}, URIs: []*url.URL{uri},
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}, Value: []byte(actionsIssuer)}}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
		w.Write(append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.pem...))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func refusingRekor(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"code":503,"message":"unavailable"}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestKeylessSigningUpToSigstore(t *testing.T) {
	token := fakeJWT(map[string]string{"sub": tokenSubjectText, "iss": actionsIssuer})
	actionsTokenServer(t, token)
	ca := newTestCA(t)
	ctx := context.Background()
	if !KeylessAvailable(ctx) {
		t.Fatal("the Actions token environment is not detected")
	}
	key, err := KeylessKey(ctx, KeylessOptions{FulcioURL: fulcioServer(t, ca, token), RekorURL: refusingRekor(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(key.Cert, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("no certificate: %q", key.Cert)
	}

	// Rekor refuses: nothing is signed (fail closed).
	var progress bytes.Buffer
	if _, _, _, err := signedBuild(t, key, &progress); err == nil || !strings.Contains(err.Error(), "Rekor") {
		t.Fatalf("want signing to fail closed when Rekor refuses, got %v", err)
	} else {
		t.Logf("Rekor refusal: %v", err)
	}

	// Without a log (the one step that cannot run here), the certificate
	// path is complete: sign, push, verify against the identity.
	key.Rekor = nil
	_, built, signed, err := signedBuild(t, key, &progress)
	if err != nil {
		t.Fatal(err)
	}
	host := testreg.InProcess(t)
	pushed, err := registry.Push(ctx, built.Images, host+"/darktower", authn.DefaultKeychain, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctx, signed.Images, host+"/darktower", authn.DefaultKeychain, nil); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	ref := strings.Split(pushed[0].Ref, "@")[0]
	id := &KeylessIdentity{Identity: workflowIdentity, Issuer: actionsIssuer, Roots: roots, SkipTransparencyLog: true}
	if _, err := Verify(ctx, VerifyOptions{Image: ref, Keyless: id}); err != nil {
		t.Fatalf("keyless verify: %v", err)
	}
	other := *id
	other.Identity = "https://github.com/someone/else/.github/workflows/x.yml@refs/heads/main"
	if _, err := Verify(ctx, VerifyOptions{Image: ref, Keyless: &other}); err == nil {
		t.Error("verify passed for another workflow's identity")
	} else {
		t.Logf("other identity refused: %v", err)
	}
}

func TestKeylessFailuresSayWhy(t *testing.T) {
	ctx := context.Background()
	t.Setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "")
	if KeylessAvailable(ctx) {
		t.Fatal("keyless detected without an Actions token environment")
	}
	token := fakeJWT(map[string]string{"sub": tokenSubjectText})
	actionsTokenServer(t, token)
	ca := newTestCA(t)
	_, err := KeylessKey(ctx, KeylessOptions{FulcioURL: fulcioServer(t, ca, "another-token"), RekorURL: refusingRekor(t)})
	if err == nil || !strings.Contains(err.Error(), "Fulcio") {
		t.Fatalf("want Fulcio's refusal named, got %v", err)
	}
	if _, err := tokenSubject("not-a-jwt"); err == nil {
		t.Error("a malformed token was accepted")
	}
}

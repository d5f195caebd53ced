// Package sigstoretest runs keyless signing for real up to Sigstore's
// boundary, which cannot be reached here: GitHub Actions' OIDC token
// endpoint and Fulcio are local servers speaking their published HTTP
// APIs (Fulcio's backed by a test CA); Rekor is a server that refuses.
package sigstoretest

import (
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
	"testing"
	"time"

	"github.com/sigstore/fulcio/pkg/api"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// The identity the test Fulcio certifies.
const (
	WorkflowIdentity = "https://github.com/darktower/delivery/.github/workflows/release.yml@refs/tags/v1.2.3"
	ActionsIssuer    = "https://token.actions.githubusercontent.com"
	TokenSubject     = "repo:darktower/delivery:ref:refs/tags/v1.2.3"
)

// CA is the test Fulcio's certificate authority.
type CA struct {
	Key  *ecdsa.PrivateKey
	Cert *x509.Certificate
	PEM  []byte
}

// NewCA makes a CA valid for an hour.
func NewCA(t *testing.T) *CA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test fulcio"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{key, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// FakeJWT is an (unsigned) token with GitHub's claim shape; Fulcio, not the
// pipeline, verifies tokens.
func FakeJWT(claims map[string]string) string {
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	return enc(map[string]string{"alg": "RS256"}) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte("sig"))
}

// ActionsTokenServer is GitHub Actions' OIDC token endpoint, set in the job's
// environment (ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN) for the test.
func ActionsTokenServer(t *testing.T, token string) {
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

// Fulcio speaks Fulcio's v1 signingCert API: it checks the bearer
// token and the proof of possession, and issues a code-signing certificate
// naming the workflow and the issuer; onIssue (if not nil) is called
// as each one is issued.
func Fulcio(t *testing.T, ca *CA, token string, onIssue func()) string {
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
		digest := sha256.Sum256([]byte(TokenSubject))
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], req.SignedEmailAddress) {
			http.Error(w, "proof of possession does not verify", http.StatusBadRequest)
			return
		}
		uri, _ := url.Parse(WorkflowIdentity)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute),
			NotAfter: time.Now().Add(10 * time.Minute), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}, URIs: []*url.URL{uri},
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}, Value: []byte(ActionsIssuer)}}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
		if onIssue != nil {
			onIssue()
		}
		w.Write(append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.PEM...))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// RefusingRekor is a Rekor that answers 503 to everything.
func RefusingRekor(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"code":503,"message":"unavailable"}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

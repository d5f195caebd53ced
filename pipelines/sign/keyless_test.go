package sign

import (
	"bytes"
	"context"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/darktower/delivery/pipelines/internal/sigstoretest"
	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/darktower/delivery/pipelines/registry"
)

// Sigstore cannot be reached here. These tests run keyless signing for
// real up to that boundary (see pipelines/internal/sigstoretest); Rekor
// refuses, so the signing fails closed.

const (
	workflowIdentity = sigstoretest.WorkflowIdentity
	actionsIssuer    = sigstoretest.ActionsIssuer
	tokenSubjectText = sigstoretest.TokenSubject
)

var (
	fakeJWT            = sigstoretest.FakeJWT
	actionsTokenServer = sigstoretest.ActionsTokenServer
	newTestCA          = sigstoretest.NewCA
	refusingRekor      = sigstoretest.RefusingRekor
)

func fulcioServer(t *testing.T, ca *sigstoretest.CA, token string) string {
	return sigstoretest.Fulcio(t, ca, token, nil)
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
	roots.AddCert(ca.Cert)
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

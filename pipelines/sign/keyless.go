package sign

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	cosignfulcio "github.com/sigstore/cosign/v2/cmd/cosign/cli/fulcio"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/providers"
	_ "github.com/sigstore/cosign/v2/pkg/providers/github" // the GitHub Actions OIDC token
	"github.com/sigstore/fulcio/pkg/api"
	rekorclient "github.com/sigstore/rekor/pkg/client"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Sigstore's public good instances.
const (
	DefaultFulcioURL = "https://fulcio.sigstore.dev"
	DefaultRekorURL  = "https://rekor.sigstore.dev"
	oidcAudience     = "sigstore"
)

// KeylessOptions say where keyless signing gets its certificate and
// records its signatures.
type KeylessOptions struct {
	FulcioURL string // default DefaultFulcioURL
	RekorURL  string // default DefaultRekorURL
}

// KeylessAvailable reports whether an ambient OIDC identity (GitHub
// Actions with `id-token: write`) can be used.
func KeylessAvailable(ctx context.Context) bool { return providers.Enabled(ctx) }

// KeylessKey makes an ephemeral key and gets a short-lived certificate for
// it from Fulcio, proving the CI job's identity with its OIDC token; the
// signatures made with it are recorded in Rekor (Sign does that).
func KeylessKey(ctx context.Context, o KeylessOptions) (*Key, error) {
	if o.FulcioURL == "" {
		o.FulcioURL = DefaultFulcioURL
	}
	if o.RekorURL == "" {
		o.RekorURL = DefaultRekorURL
	}
	token, err := providers.Provide(ctx, oidcAudience)
	if err != nil {
		return nil, fmt.Errorf("keyless: getting the OIDC token (does the job have `permissions: id-token: write`?): %w", err)
	}
	subject, err := tokenSubject(token)
	if err != nil {
		return nil, fmt.Errorf("keyless: %w", err)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sv, err := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	pubPEM, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return nil, err
	}
	// Proof of possession: the token's subject signed with the new key.
	proof, err := sv.SignMessage(strings.NewReader(subject))
	if err != nil {
		return nil, err
	}
	fulcioURL, err := url.Parse(o.FulcioURL)
	if err != nil {
		return nil, fmt.Errorf("keyless: Fulcio URL %q: %w", o.FulcioURL, err)
	}
	resp, err := api.NewClient(fulcioURL).SigningCert(api.CertificateRequest{PublicKey: api.Key{Content: pubPEM}, SignedEmailAddress: proof}, token)
	if err != nil {
		return nil, fmt.Errorf("keyless: Fulcio (%s) did not issue a certificate: %w", o.FulcioURL, err)
	}
	rekor, err := rekorclient.GetRekorClient(o.RekorURL)
	if err != nil {
		return nil, fmt.Errorf("keyless: Rekor URL %q: %w", o.RekorURL, err)
	}
	return &Key{Signer: sv, PublicPEM: pubPEM, Source: "keyless (Fulcio " + o.FulcioURL + ", Rekor " + o.RekorURL + ")",
		Cert: resp.CertPEM, Chain: resp.ChainPEM, Rekor: rekor}, nil
}

// tokenSubject reads the subject the certificate will name from the OIDC
// token's claims (Fulcio verifies the token; this only picks the claim
// the proof of possession signs: the email when there is one, else sub).
func tokenSubject(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("the OIDC token is not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("the OIDC token's claims do not decode: %w", err)
	}
	var claims struct {
		Subject string `json:"sub"`
		Email   string `json:"email"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		return "", fmt.Errorf("the OIDC token's claims do not parse: %w", err)
	}
	if claims.Email != "" {
		return claims.Email, nil
	}
	if claims.Subject == "" {
		return "", fmt.Errorf("the OIDC token has no subject")
	}
	return claims.Subject, nil
}

// KeylessIdentity is what a keyless signature must have been made by.
type KeylessIdentity struct {
	Identity string // the certificate's subject: the workflow, e.g. https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1.2.3
	Issuer   string // the OIDC issuer, e.g. https://token.actions.githubusercontent.com
	// Trust roots; nil: Sigstore's public good Fulcio roots and Rekor
	// and CT log keys (fetched through Sigstore's TUF repository).
	Roots         *x509.CertPool
	Intermediates *x509.CertPool
	// SkipTransparencyLog: only for roots that issue no SCT and log to no
	// Rekor (a private CA).
	SkipTransparencyLog bool
}

// checkOpts sets the keyless parts of cosign's verification options.
func (k *KeylessIdentity) checkOpts(ctx context.Context, co *cosign.CheckOpts) error {
	co.Identities = []cosign.Identity{{Subject: k.Identity, Issuer: k.Issuer}}
	co.RootCerts, co.IntermediateCerts = k.Roots, k.Intermediates
	if k.SkipTransparencyLog {
		co.IgnoreTlog, co.IgnoreSCT = true, true
		return nil
	}
	var err error
	if co.RootCerts == nil {
		if co.RootCerts, err = cosignfulcio.GetRoots(); err != nil {
			return fmt.Errorf("Fulcio roots: %w", err)
		}
		if co.IntermediateCerts, err = cosignfulcio.GetIntermediates(); err != nil {
			return fmt.Errorf("Fulcio intermediates: %w", err)
		}
	}
	if co.RekorPubKeys, err = cosign.GetRekorPubs(ctx); err != nil {
		return fmt.Errorf("Rekor keys: %w", err)
	}
	if co.CTLogPubKeys, err = cosign.GetCTLogPubs(ctx); err != nil {
		return fmt.Errorf("CT log keys: %w", err)
	}
	co.IgnoreTlog, co.IgnoreSCT = false, false
	return nil
}

package sign

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
)

// VerifyOptions: what to verify and against which key.
type VerifyOptions struct {
	Image     string // a registry reference (tag or digest)
	PublicKey []byte // PEM; or, for keyless signatures, Keyless
	Keyless   *KeylessIdentity
	Keychain  authn.Keychain
	// Predicates that must each be attested (default: Predicates).
	Predicates []string
}

// Verified is what Verify checked.
type Verified struct {
	Digest       string
	Signatures   int
	Attestations map[string]int // per predicate type
	// Statements are the verified attestations' statements.
	Statements []*Statement
	// Stored counts the signatures and attestations the registry holds for
	// the digest, verified or not: more than verified means some did not
	// verify (cosign keeps the ones that do).
	StoredSignatures, StoredAttestations int
}

// Verify checks that the image (as the registry serves it now) carries a
// signature by the key over its digest, and every required attestation,
// signed by the key, whose subject is that digest.
func Verify(ctx context.Context, o VerifyOptions) (*Verified, error) {
	ref, err := name.ParseReference(o.Image)
	if err != nil {
		return nil, fmt.Errorf("--image %q: %w", o.Image, err)
	}
	if (len(o.PublicKey) == 0) == (o.Keyless == nil) {
		return nil, errors.New("verify against either a public key (--key cosign.pub) or a keyless identity (--certificate-identity and --certificate-oidc-issuer)")
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	desc, err := remote.Head(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	co := &cosign.CheckOpts{
		RegistryClientOpts: []ociremote.Option{ociremote.WithRemoteOptions(remote.WithContext(ctx), remote.WithAuthFromKeychain(kc))},
		ClaimVerifier:      cosign.SimpleClaimVerifier,
	}
	if o.Keyless != nil {
		if err := o.Keyless.checkOpts(ctx, co); err != nil {
			return nil, fmt.Errorf("keyless verification: %w", err)
		}
	} else {
		if co.SigVerifier, err = PublicKeyVerifier(o.PublicKey); err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		// Keyed signatures made by this pipeline are not in a transparency log.
		co.IgnoreTlog, co.IgnoreSCT = true, true
	}
	digestRef := ref.Context().Digest(desc.Digest.String())
	sigs, _, err := cosign.VerifyImageSignatures(ctx, digestRef, co)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): signature: %w", ref, desc.Digest, err)
	}
	co.ClaimVerifier = cosign.IntotoSubjectClaimVerifier
	atts, _, err := cosign.VerifyImageAttestations(ctx, digestRef, co)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): attestations: %w", ref, desc.Digest, err)
	}
	v := &Verified{Digest: desc.Digest.String(), Signatures: len(sigs), Attestations: map[string]int{}}
	if v.StoredSignatures, v.StoredAttestations, err = stored(digestRef, co.RegistryClientOpts); err != nil {
		return nil, fmt.Errorf("%s (%s): %w", ref, desc.Digest, err)
	}
	for _, a := range atts {
		raw, err := a.Payload()
		if err != nil {
			return nil, err
		}
		st, err := DecodeStatement(raw)
		if err != nil {
			return nil, err
		}
		v.Attestations[st.PredicateType]++
		v.Statements = append(v.Statements, st)
	}
	want := o.Predicates
	if want == nil {
		want = Predicates
	}
	for _, p := range want {
		if v.Attestations[p] == 0 {
			err := fmt.Errorf("%s (%s): no verified %s attestation", ref, desc.Digest, p)
			if unverified := v.StoredAttestations - len(v.Statements); unverified > 0 {
				err = fmt.Errorf("%w (%d of the %d attestations stored do not verify: altered, or signed by another key)", err, unverified, v.StoredAttestations)
			}
			return v, err
		}
	}
	return v, nil
}

// stored counts the signatures and attestations stored for digest.
func stored(digest name.Digest, opts []ociremote.Option) (sigs, atts int, err error) {
	entity, err := ociremote.SignedEntity(digest, opts...)
	if err != nil {
		return 0, 0, err
	}
	s, err := entity.Signatures()
	if err != nil {
		return 0, 0, fmt.Errorf("reading the signatures: %w", err)
	}
	all, err := s.Get()
	if err != nil {
		return 0, 0, fmt.Errorf("reading the signatures: %w", err)
	}
	a, err := entity.Attestations()
	if err != nil {
		return 0, 0, fmt.Errorf("reading the attestations: %w", err)
	}
	allAtts, err := a.Get()
	if err != nil {
		return 0, 0, fmt.Errorf("reading the attestations: %w", err)
	}
	return len(all), len(allAtts), nil
}

// Statement is a decoded in-toto statement.
type Statement struct {
	Type          string          `json:"_type"`
	PredicateType string          `json:"predicateType"`
	Subject       []subject       `json:"subject"`
	Predicate     json.RawMessage `json:"predicate"`
}

// DecodeStatement opens a DSSE envelope holding an in-toto statement.
func DecodeStatement(envelope []byte) (*Statement, error) {
	var env struct {
		PayloadType string `json:"payloadType"`
		Payload     string `json:"payload"`
	}
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, fmt.Errorf("attestation is not a DSSE envelope: %w", err)
	}
	if env.PayloadType != intotoPayloadType {
		return nil, fmt.Errorf("attestation payload type %q, want %q", env.PayloadType, intotoPayloadType)
	}
	raw, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, err
	}
	var st Statement
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, err
	}
	if !slices.Contains([]string{statementType, "https://in-toto.io/Statement/v0.1"}, st.Type) {
		return nil, fmt.Errorf("not an in-toto statement: _type %q", st.Type)
	}
	return &st, nil
}

// Subjects lists a statement's subject digests ("sha256:<hex>").
func (s *Statement) Subjects() []string {
	var out []string
	for _, sub := range s.Subject {
		for alg, hex := range sub.Digest {
			out = append(out, alg+":"+hex)
		}
	}
	return out
}

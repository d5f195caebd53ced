// Package sign is the pipeline's signing stage (cosign as a library):
// every image index digest gets a cosign signature and three in-toto
// attestations — the CycloneDX SBOM of each platform, the vulnerability
// scan (cosign's vuln predicate) and SLSA v1 provenance — stored as
// cosign stores them (the sha256-<digest>.sig and .att artifacts), in the
// build's OCI layout and, on push, in the registry next to the image.
// Verify checks a published image against a public key.
package sign

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/signed"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	rekorapi "github.com/sigstore/rekor/pkg/generated/client"
	"github.com/sigstore/rekor/pkg/generated/models"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	sigpayload "github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/internal/stagecache"
	"github.com/darktower/delivery/pipelines/sbom"
	"github.com/darktower/delivery/pipelines/scan"
)

// Predicate types of the attestations every image carries.
const (
	PredicateCycloneDX  = "https://cyclonedx.org/bom"
	PredicateVuln       = "https://cosign.sigstore.dev/attestation/vuln/v1"
	PredicateSLSA       = "https://slsa.dev/provenance/v1"
	statementType       = "https://in-toto.io/Statement/v1"
	intotoPayloadType   = "application/vnd.in-toto+json"
	localRepositoryHost = "dist.local" // names the images in signatures made before a push
)

// Predicates lists what Verify requires.
var Predicates = []string{PredicateCycloneDX, PredicateVuln, PredicateSLSA}

// Provenance is what the SLSA predicate records about the build.
type Provenance struct {
	BuilderID  string            // who built: the workflow, or local:<host>
	SourceURL  string            // the repository
	Revision   string            // the commit
	Parameters map[string]string // the build's parameters (services, platforms, version, base choice)
	BaseName   string
	BaseDigest string
	Started    time.Time
	Finished   time.Time
}

// Options are the stage's inputs.
type Options struct {
	Images     []*build.Image
	Documents  []*sbom.Document // every platform's SBOM (Out-relative paths)
	Scan       *scan.Result
	ScanDB     *scan.DBInfo
	Key        *Key
	Out        string // the build's output directory (reads SBOMs, writes the layout)
	Repository string // the push prefix, named in the signature payloads ("" before any push: dist.local)
	Provenance Provenance
	Progress   io.Writer
	// CacheDir keeps each image's signature and attestations under a key
	// of the image, the key's public half and the signed content (run
	// times aside), so an unchanged image is not signed again: cosign's
	// ECDSA signatures are randomized, so reuse keeps the earlier
	// signature, verified with the key before it is reused. Keyless
	// signatures are never reused ("" = no reuse).
	CacheDir string
}

// Signed is one signed image: the entity to publish and what it carries.
type Signed struct {
	Service           string
	Digest            string
	Entity            oci.SignedImageIndex
	SignatureDigest   string
	AttestationDigest string
}

// Result is the stage's output.
type Result struct {
	Images []*Signed
	Reused int // images whose signature and attestations came from the cache
	Took   time.Duration
}

// Sign signs and attests every image and adds the signature and
// attestation artifacts to the output's OCI layout.
func Sign(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	if o.Key == nil {
		return nil, fmt.Errorf("sign: no key")
	}
	res := &Result{}
	dsseSigner := dsse.WrapSigner(o.Key.Signer, intotoPayloadType)
	// A keyless signature carries a certificate that lives 10 minutes and
	// a transparency-log entry of its own: it is never reused.
	reusable := o.CacheDir != "" && o.Key.Cert == nil
	if o.Key.Cert != nil && o.Progress != nil {
		fmt.Fprintf(o.Progress, "sign: keyless: no signature is reused across runs (the certificate expires): every image is signed now\n")
	}
	for _, im := range o.Images {
		digest, err := v1.NewHash(im.Digest)
		if err != nil {
			return nil, err
		}
		repo := localRepositoryHost + "/" + im.Service
		if o.Repository != "" {
			repo = strings.TrimSuffix(o.Repository, "/") + "/" + im.Service
		}
		ref, err := name.NewDigest(repo + "@" + im.Digest)
		if err != nil {
			return nil, fmt.Errorf("sign: %s: %w", im.Service, err)
		}
		payload, err := json.Marshal(sigpayload.Cosign{Image: ref, Annotations: map[string]interface{}{"dev.darktower.service": im.Service}})
		if err != nil {
			return nil, err
		}
		statements, err := o.statements(im, digest)
		if err != nil {
			return nil, fmt.Errorf("sign: %s: %w", im.Service, err)
		}
		cacheKey, timeless, err := o.cacheKey(im, digest, payload)
		if err != nil {
			return nil, fmt.Errorf("sign: %s: %w", im.Service, err)
		}
		var entity oci.SignedImageIndex
		var c cachedSignature
		reused := false
		if reusable {
			switch err := stagecache.Get(o.CacheDir, cacheKey, &c); {
			case err == nil:
				if err = c.check(o.Key, payload, timeless); err == nil {
					entity, err = c.entity(im)
				}
				if err == nil {
					reused = true
				} else if o.Progress != nil {
					fmt.Fprintf(o.Progress, "sign: cached signature of %s unusable, signing again: %v\n", im.Service, err)
				}
			case !errors.Is(err, fs.ErrNotExist) && o.Progress != nil:
				fmt.Fprintf(o.Progress, "sign: cached signature of %s unusable, signing again: %v\n", im.Service, err)
			}
		}
		if !reused {
			c = cachedSignature{Payload: payload}
			raw, err := o.Key.Signer.SignMessage(bytes.NewReader(payload))
			if err != nil {
				return nil, fmt.Errorf("sign: %s: %w", im.Service, err)
			}
			sigOpts, err := o.Key.transparency(ctx, func(rc *rekorapi.Rekor) (*models.LogEntryAnon, error) {
				h := sha256.New()
				h.Write(payload)
				return cosign.TLogUpload(ctx, rc, raw, h, o.Key.Cert)
			})
			if err != nil {
				return nil, fmt.Errorf("sign: %s: %w", im.Service, err)
			}
			sig, err := static.NewSignature(payload, base64.StdEncoding.EncodeToString(raw), sigOpts...)
			if err != nil {
				return nil, err
			}
			c.Signature = base64.StdEncoding.EncodeToString(raw)
			if entity, err = mutate.AttachSignatureToImageIndex(signed.ImageIndex(im.Index), sig); err != nil {
				return nil, err
			}
			for _, st := range statements {
				envelope, err := dsseSigner.SignMessage(bytes.NewReader(st))
				if err != nil {
					return nil, fmt.Errorf("sign: %s: attesting: %w", im.Service, err)
				}
				c.Envelopes = append(c.Envelopes, envelope)
				attOpts, err := o.Key.transparency(ctx, func(rc *rekorapi.Rekor) (*models.LogEntryAnon, error) {
					return cosign.TLogUploadInTotoAttestation(ctx, rc, envelope, o.Key.Cert)
				})
				if err != nil {
					return nil, fmt.Errorf("sign: %s: %w", im.Service, err)
				}
				att, err := static.NewAttestation(envelope, attOpts...)
				if err != nil {
					return nil, err
				}
				if entity, err = mutate.AttachAttestationToImageIndex(entity, att); err != nil {
					return nil, err
				}
			}
			if reusable {
				if err := stagecache.Put(o.CacheDir, cacheKey, c); err != nil && o.Progress != nil {
					fmt.Fprintf(o.Progress, "sign: warning: signature not cached (%v): the next build signs %s again\n", err, im.Service)
				}
			}
		}
		s := &Signed{Service: im.Service, Digest: im.Digest, Entity: entity}
		if s.SignatureDigest, s.AttestationDigest, err = writeToLayout(filepath.Join(o.Out, build.LayoutDir), s); err != nil {
			return nil, fmt.Errorf("sign: %s: writing to the layout: %w", im.Service, err)
		}
		res.Images = append(res.Images, s)
		switch {
		case o.Progress == nil:
		case reused:
			res.Reused++
			fmt.Fprintf(o.Progress, "sign: %-20s %s signature and %d attestations reused (same image, key and content; verified with the key; signed at an earlier run)\n",
				im.Service, im.Digest, len(statements))
		default:
			fmt.Fprintf(o.Progress, "sign: %-20s %s signed, %d attestations (%s)\n", im.Service, im.Digest, len(statements), o.Key.Source)
		}
	}
	if o.CacheDir != "" {
		if err := stagecache.Prune(o.CacheDir, start.Add(-stagecache.MaxAge)); err != nil && o.Progress != nil {
			fmt.Fprintf(o.Progress, "sign: warning: pruning the cache: %v\n", err)
		}
	}
	res.Took = time.Since(start)
	return res, nil
}

// cachedSignature is a cache entry: the signed payload, its signature
// (base64) and the attestations' DSSE envelopes, in order.
type cachedSignature struct {
	Payload   []byte   `json:"payload"`
	Signature string   `json:"signature"`
	Envelopes [][]byte `json:"envelopes"`
}

// cacheKey is the key of an image's signature and attestations: the
// pipeline, the image, the key's public half, the signature payload and
// the statements with the run's times left out (a rerun's provenance
// differs only in them). timeless are those statements.
func (o Options) cacheKey(im *build.Image, digest v1.Hash, payload []byte) (string, [][]byte, error) {
	pipeline, err := build.PipelineDigest()
	if err != nil {
		return "", nil, err
	}
	t := o
	t.Provenance.Started, t.Provenance.Finished = time.Time{}, time.Time{}
	if o.Scan != nil {
		sc := *o.Scan
		sc.Started, sc.Took = time.Time{}, 0
		t.Scan = &sc
	}
	timeless, err := t.statements(im, digest)
	if err != nil {
		return "", nil, err
	}
	keyID := sha256.Sum256(o.Key.PublicPEM)
	lines := []string{"darktower sign", "pipeline " + pipeline, "image " + im.Service + " " + im.Digest,
		fmt.Sprintf("key %x", keyID), fmt.Sprintf("payload %x", sha256.Sum256(payload))}
	for _, st := range timeless {
		lines = append(lines, fmt.Sprintf("statement %x", sha256.Sum256(st)))
	}
	return stagecache.Key(lines...), timeless, nil
}

// check verifies a cached entry before reuse: the same payload, its
// signature and every envelope's verified with the key, and each
// envelope's statement the one this run would sign, times aside.
func (c cachedSignature) check(k *Key, payload []byte, timeless [][]byte) error {
	if !bytes.Equal(c.Payload, payload) {
		return fmt.Errorf("another payload")
	}
	raw, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil {
		return err
	}
	if err := k.Signer.VerifySignature(bytes.NewReader(raw), bytes.NewReader(payload)); err != nil {
		return fmt.Errorf("the signature does not verify with the key: %w", err)
	}
	if len(c.Envelopes) != len(timeless) {
		return fmt.Errorf("%d attestations, want %d", len(c.Envelopes), len(timeless))
	}
	verifier := dsse.WrapVerifier(k.Signer)
	for i, env := range c.Envelopes {
		if err := verifier.VerifySignature(bytes.NewReader(env), nil); err != nil {
			return fmt.Errorf("attestation %d does not verify with the key: %w", i+1, err)
		}
		var e struct {
			PayloadType string `json:"payloadType"`
			Payload     []byte `json:"payload"`
		}
		if err := json.Unmarshal(env, &e); err != nil {
			return err
		}
		got, err := withoutTimes(e.Payload)
		if err != nil {
			return err
		}
		want, err := withoutTimes(timeless[i])
		if err != nil {
			return err
		}
		if e.PayloadType != intotoPayloadType || !bytes.Equal(got, want) {
			return fmt.Errorf("attestation %d states something else", i+1)
		}
	}
	return nil
}

// withoutTimes is a statement in canonical JSON with the run's times
// (the provenance's and the scan's) blanked.
func withoutTimes(st []byte) ([]byte, error) {
	var v map[string]any
	if err := json.Unmarshal(st, &v); err != nil {
		return nil, err
	}
	pred, _ := v["predicate"].(map[string]any)
	if rd, ok := pred["runDetails"].(map[string]any); ok {
		if md, ok := rd["metadata"].(map[string]any); ok {
			md["startedOn"], md["finishedOn"] = "", ""
		}
	}
	if md, ok := pred["metadata"].(map[string]any); ok {
		if _, scan := md["scanStartedOn"]; scan {
			md["scanStartedOn"], md["scanFinishedOn"] = "", ""
		}
	}
	return json.Marshal(v)
}

// entity attaches the cached signature and attestations to the image,
// as signing does (keyed: no certificate, no log entry).
func (c cachedSignature) entity(im *build.Image) (oci.SignedImageIndex, error) {
	sig, err := static.NewSignature(c.Payload, c.Signature)
	if err != nil {
		return nil, err
	}
	entity, err := mutate.AttachSignatureToImageIndex(signed.ImageIndex(im.Index), sig)
	if err != nil {
		return nil, err
	}
	for _, env := range c.Envelopes {
		att, err := static.NewAttestation(env)
		if err != nil {
			return nil, err
		}
		if entity, err = mutate.AttachAttestationToImageIndex(entity, att); err != nil {
			return nil, err
		}
	}
	return entity, nil
}

// transparency: a keyless key's certificate rides with each signature,
// and the signature is recorded in Rekor with its inclusion bundle.
func (k *Key) transparency(ctx context.Context, upload func(*rekorapi.Rekor) (*models.LogEntryAnon, error)) ([]static.Option, error) {
	if k.Cert == nil {
		return nil, nil
	}
	opts := []static.Option{static.WithCertChain(k.Cert, k.Chain)}
	if k.Rekor != nil {
		entry, err := upload(k.Rekor)
		if err != nil {
			return nil, fmt.Errorf("recording the signature in Rekor: %w", err)
		}
		opts = append(opts, static.WithBundle(cbundle.EntryToBundle(entry)))
	}
	return opts, nil
}

// statement is an in-toto v1 statement.
type statement struct {
	Type          string    `json:"_type"`
	Subject       []subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     any       `json:"predicate"`
}

type subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

func subjectsOf(im *build.Image, digest v1.Hash) []subject {
	return []subject{{Name: im.Service, Digest: map[string]string{digest.Algorithm: digest.Hex}}}
}

// statements are the three attestations' statements for one image.
func (o Options) statements(im *build.Image, digest v1.Hash) ([][]byte, error) {
	subj := subjectsOf(im, digest)
	var out []statement
	for _, d := range o.Documents {
		if d.Service != im.Service {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(o.Out, d.CycloneDX))
		if err != nil {
			return nil, err
		}
		var bom json.RawMessage = raw
		// The index digest (what is verified) and the platform image's.
		ph, err := v1.NewHash(d.ImageDigest)
		if err != nil {
			return nil, err
		}
		s := append(append([]subject(nil), subj...), subject{Name: im.Service + " " + d.Platform, Digest: map[string]string{ph.Algorithm: ph.Hex}})
		out = append(out, statement{statementType, s, PredicateCycloneDX, bom})
	}
	if o.Scan != nil {
		out = append(out, statement{statementType, subj, PredicateVuln, vulnPredicate(o.Scan, o.ScanDB, im.Service)})
	}
	out = append(out, statement{statementType, subj, PredicateSLSA, slsaPredicate(o.Provenance, im)})
	var raw [][]byte
	for _, s := range out {
		b, err := json.Marshal(s)
		if err != nil {
			return nil, err
		}
		raw = append(raw, b)
	}
	return raw, nil
}

// vulnPredicate is cosign's vulnerability attestation: the scanner, its
// DB and the findings of every platform of the service.
func vulnPredicate(res *scan.Result, db *scan.DBInfo, service string) any {
	var images []*scan.Image
	for _, im := range res.Images {
		if im.Service == service {
			images = append(images, im)
		}
	}
	scanner := map[string]any{
		"uri":     "pkg:golang/github.com/aquasecurity/trivy",
		"version": trivyVersion,
		"db":      map[string]any{"uri": "pkg:oci/trivy-db?repository_url=ghcr.io/aquasecurity/trivy-db", "version": dbVersion(db)},
		"result":  images,
	}
	params := map[string]string{"severity-threshold": res.Threshold}
	if res.Source == scan.SourceGoVulnDB {
		// govulncheck judged the build, against the Go vulnerability database.
		scanner["uri"], scanner["version"] = "pkg:golang/golang.org/x/vuln", govulncheckVersion
		scanner["db"] = map[string]any{"uri": "pkg:golang/" + res.SourceVersion, "version": res.SourceDate.UTC().Format(time.RFC3339)}
		params = map[string]string{"gate": res.Gate}
	}
	return map[string]any{
		"invocation": map[string]any{"parameters": params, "uri": "", "event_id": "", "builder.id": ""},
		"scanner":    scanner,
		"metadata":   map[string]any{"scanStartedOn": res.Started.UTC().Format(time.RFC3339), "scanFinishedOn": res.Started.Add(res.Took).UTC().Format(time.RFC3339)},
	}
}

func dbVersion(db *scan.DBInfo) string {
	if db == nil {
		return ""
	}
	return fmt.Sprintf("schema %d, updated %s", db.Version, db.UpdatedAt.UTC().Format(time.RFC3339))
}

// trivyVersion and govulncheckVersion are the Trivy and golang.org/x/vuln
// library versions the scan stage is built with.
const (
	trivyVersion       = "v0.74.0"
	govulncheckVersion = "v1.9.0"
)

// slsaPredicate is SLSA v1 provenance.
func slsaPredicate(p Provenance, im *build.Image) any {
	deps := []map[string]any{}
	if p.SourceURL != "" {
		deps = append(deps, map[string]any{"uri": "git+" + p.SourceURL + "@" + p.Revision, "digest": map[string]string{"gitCommit": p.Revision}})
	}
	if base, err := v1.NewHash(im.BaseDigest); err == nil {
		deps = append(deps, map[string]any{"uri": im.BaseName, "digest": map[string]string{base.Algorithm: base.Hex}})
	}
	return map[string]any{
		"buildDefinition": map[string]any{
			"buildType":            "https://github.com/darktower/delivery/build-all/v1",
			"externalParameters":   p.Parameters,
			"internalParameters":   map[string]any{"buildKey": im.BuildKey, "tag": im.Tag},
			"resolvedDependencies": deps,
		},
		"runDetails": map[string]any{
			"builder":  map[string]any{"id": p.BuilderID},
			"metadata": map[string]any{"startedOn": p.Started.UTC().Format(time.RFC3339), "finishedOn": p.Finished.UTC().Format(time.RFC3339)},
		},
	}
}

// writeToLayout adds the signature and attestation images to the layout,
// named as cosign tags them (sha256-<hex>.sig / .att), so a later push of
// the layout publishes them too.
func writeToLayout(path string, s *Signed) (sigDigest, attDigest string, err error) {
	p, err := layout.FromPath(path)
	if err != nil {
		return "", "", err
	}
	h, err := v1.NewHash(s.Digest)
	if err != nil {
		return "", "", err
	}
	sigs, err := s.Entity.Signatures()
	if err != nil {
		return "", "", err
	}
	atts, err := s.Entity.Attestations()
	if err != nil {
		return "", "", err
	}
	for _, a := range []struct {
		img    v1.Image
		suffix string
		out    *string
	}{{sigs, ".sig", &sigDigest}, {atts, ".att", &attDigest}} {
		d, err := a.img.Digest()
		if err != nil {
			return "", "", err
		}
		*a.out = d.String()
		if err := p.AppendImage(a.img, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": h.Algorithm + "-" + h.Hex + a.suffix,
			"dev.darktower.service":             s.Service,
		})); err != nil {
			return "", "", err
		}
	}
	return sigDigest, attDigest, nil
}

// Publish writes the signatures and attestations next to the pushed
// images (<prefix>/<service>:sha256-<hex>.sig / .att).
func Publish(ctx context.Context, images []*Signed, prefix string, kc authn.Keychain, progress io.Writer) error {
	opts := ociremote.WithRemoteOptions(remote.WithContext(ctx), remote.WithAuthFromKeychain(kc))
	for _, s := range images {
		repo, err := name.NewRepository(strings.TrimSuffix(prefix, "/") + "/" + s.Service)
		if err != nil {
			return err
		}
		if err := ociremote.WriteSignatures(repo, s.Entity, opts); err != nil {
			return fmt.Errorf("publishing %s's signature: %w", s.Service, err)
		}
		if err := ociremote.WriteAttestations(repo, s.Entity, opts); err != nil {
			return fmt.Errorf("publishing %s's attestations: %w", s.Service, err)
		}
		if progress != nil {
			fmt.Fprintf(progress, "push: %-20s signature and attestations\n", s.Service)
		}
	}
	return nil
}

// Package promote is the promotion stage: the images of a release tag,
// verified against a signing policy, copied by digest with their cosign
// signatures and attestations from the release registry to the
// production one, then tagged; and the production overlay's image pins
// rewritten to them, as a patch with a verification summary.
//
// Everything is verified before anything is copied: one image that is
// unsigned, re-tagged or tampered with stops the whole promotion with
// nothing written. The copies are verified again in production, by
// digest, before any tag is written there. The copy is by digest and verbatim (the signature and
// attestation manifests keep their digests), so a run that stopped half
// way is completed by running it again, without duplicates.
package promote

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/overlay"
	"github.com/darktower/delivery/pipelines/sign"
)

// ReleaseTag is a release tag: v, then semantic version 2.0 without build
// metadata (a registry tag cannot carry "+").
var ReleaseTag = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)

// Files the stage writes in Options.Out.
const (
	PatchFile   = "prod-pins.patch"
	SummaryFile = "summary.md"
)

// Policy is what a promoted image must satisfy.
type Policy struct {
	// Signed by this public key (PEM), or keyless by this identity.
	PublicKey []byte
	Keyless   *sign.KeylessIdentity
	// Repository is the source repository the provenance must name,
	// e.g. https://github.com/darktower/delivery.
	Repository string
}

// Options are the stage's inputs.
type Options struct {
	Tag      string   // the release tag, e.g. v1.4.0
	From, To string   // registry/repository prefixes: the release's, production's
	Services []string // the images to promote (<prefix>/<service>:<tag>)
	Policy   Policy
	Keychain authn.Keychain // credentials for both registries
	// Kustomizations are the overlays whose pins are rewritten (none: no
	// pins): every promoted image must be pinned by one of them.
	Kustomizations []Kustomization
	Out            string // where the patch and the summary are written ("" = nowhere)
	Progress       io.Writer
}

// Kustomization is one kustomization.yaml to pin; PatchPath is its path
// in the patch (relative to the repository root; "" = Path).
type Kustomization struct{ Path, PatchPath string }

func (k Kustomization) patchPath() string {
	if k.PatchPath != "" {
		return k.PatchPath
	}
	return filepath.ToSlash(k.Path)
}

// Image is one promoted image and what was verified of it.
type Image struct {
	Service      string
	Digest       string
	Source       string         // <from>/<service>:<tag>@<digest>
	Target       string         // <to>/<service>:<tag>@<digest>
	Signatures   int            // verified signatures
	Attestations map[string]int // verified attestations per predicate type
	Blobs        int            // image blobs read and checked against their digests
	Bytes        int64
	Provenance   Provenance
	Gate         string // the vulnerability gate the attestation records
	Scanned      int    // platform images the vulnerability attestation covers
	// Copied lists what this run wrote to the target (index, .sig, .att,
	// tag); what was already there is not in it.
	Copied         []string
	TargetVerified bool
	// artifacts are the verified signature and attestation manifests'
	// digests, by cosign tag: what is copied (by digest, so what is
	// copied is what was verified).
	artifacts map[string]string
}

// Provenance is what the provenance attestation says about the build.
type Provenance struct {
	Repository, Revision, Builder, Version string
}

// Result is the stage's output.
type Result struct {
	Tag     string
	Images  []*Image
	Patch   string // the overlays' change ("" when they were already pinned, or no overlay)
	Summary string // markdown
	Took    time.Duration
	Pinned  []string // the kustomizations pinned (their patch paths)
	Files   []string
}

// Promote verifies every image of the tag, then copies them, then pins.
func Promote(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	if err := o.check(); err != nil {
		return nil, err
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
	say := func(f string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "promote: "+f+"\n", a...)
		}
	}

	// 1. Verify everything; copy nothing.
	var images []*Image
	var problems []error
	for _, svc := range o.Services {
		im, err := o.verify(ctx, svc, kc, ropts)
		if err != nil {
			problems = append(problems, err)
			say("%-20s REFUSED", svc)
			continue
		}
		say("%-20s %s verified: %d signature(s), attestations %s; provenance %s@%s, %s; vulnerability gate passed (blocks on: %s); %d blobs checked",
			svc, im.Digest, im.Signatures, predicateCounts(im.Attestations), im.Provenance.Repository, short(im.Provenance.Revision), im.Provenance.Version, im.Gate, im.Blobs)
		images = append(images, im)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("promotion of %s refused, nothing was copied to %s:\n%w", o.Tag, o.To, errors.Join(problems...))
	}

	// 2. Copy every image by digest with its signatures and attestations.
	for _, im := range images {
		if err := copyImage(im, o, ropts); err != nil {
			return nil, fmt.Errorf("copying %s to %s: %w (no tag %s was written in %s; run the promotion again to complete it)", im.Service, o.To, err, o.Tag, o.To)
		}
		if len(im.Copied) == 0 {
			say("%-20s already in %s (index, signatures, attestations)", im.Service, o.To)
		} else {
			say("%-20s copied %s to %s", im.Service, strings.Join(im.Copied, ", "), strings.TrimSuffix(im.Target, ":"+o.Tag+"@"+im.Digest))
		}
	}
	// 3. Each copy verifies in production, by digest, before any tag is
	// written there: what production serves under the tag is what verifies.
	for _, im := range images {
		target := strings.SplitN(im.Target, ":"+o.Tag+"@", 2)[0] + "@" + im.Digest
		v, err := sign.Verify(ctx, sign.VerifyOptions{Image: target, PublicKey: o.Policy.PublicKey, Keyless: o.Policy.Keyless, Keychain: kc})
		if err == nil && (v.StoredSignatures != v.Signatures || v.StoredAttestations != len(v.Statements)) {
			err = fmt.Errorf("%d of %d signature(s) and %d of %d attestation(s) verify", v.Signatures, v.StoredSignatures, len(v.Statements), v.StoredAttestations)
		}
		if err != nil {
			return nil, fmt.Errorf("the copy of %s does not verify in %s: %w (no tag %s was written there)", im.Service, o.To, err, o.Tag)
		}
		im.TargetVerified = true
		say("%-20s %s verifies in %s", im.Service, target, o.To)
	}
	// 4. Then the tags, once every digest is in and verifies.
	tags := 0
	for _, im := range images {
		tagged, err := tagImage(im, o, ropts)
		if err != nil {
			return nil, fmt.Errorf("tagging %s: %w (run the promotion again to complete it)", im.Target, err)
		}
		if tagged {
			im.Copied = append(im.Copied, "tag "+o.Tag)
			tags++
		}
	}
	say("%d of %d image(s) tagged %s in %s now (the others already were)", tags, len(images), o.Tag, o.To)
	res := &Result{Tag: o.Tag, Images: images}

	// 5. The overlay's pins, as a patch.
	if len(o.Kustomizations) > 0 {
		if err := o.pin(res); err != nil {
			return res, err
		}
		if res.Patch == "" {
			say("%s already pin these digests", strings.Join(res.Pinned, ", "))
		} else {
			say("%s pinned to %s's digests", strings.Join(res.Pinned, ", "), o.Tag)
		}
	}
	res.Took = time.Since(start)
	res.Summary = summary(o, res)
	if o.Out != "" {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return res, err
		}
		files := map[string]string{SummaryFile: res.Summary}
		if res.Patch != "" {
			files[PatchFile] = res.Patch
		}
		for _, f := range slices.Sorted(maps.Keys(files)) {
			p := filepath.Join(o.Out, f)
			if err := os.WriteFile(p, []byte(files[f]), 0o644); err != nil {
				return res, err
			}
			res.Files = append(res.Files, p)
		}
		say("wrote %s", strings.Join(res.Files, ", "))
	}
	say("%d image(s) of %s promoted to %s in %s", len(images), o.Tag, o.To, res.Took.Round(time.Millisecond))
	return res, nil
}

// check refuses bad options before anything is asked of a registry.
func (o Options) check() error {
	var problems []error
	if !ReleaseTag.MatchString(o.Tag) {
		problems = append(problems, fmt.Errorf("--tag %q is not a release tag: use vMAJOR.MINOR.PATCH or vMAJOR.MINOR.PATCH-PRERELEASE, e.g. v1.4.0", o.Tag))
	}
	for flag, prefix := range map[string]string{"--from": o.From, "--to": o.To} {
		if prefix == "" {
			problems = append(problems, fmt.Errorf("%s is required: a registry/repository prefix, e.g. ghcr.io/darktower", flag))
		} else if _, err := name.NewRepository(strings.TrimSuffix(prefix, "/")+"/x", name.StrictValidation); err != nil || !strings.Contains(prefix, "/") {
			problems = append(problems, fmt.Errorf("%s %q is not a registry/repository prefix (e.g. registry.example.com/darktower; lowercase)", flag, prefix))
		}
	}
	if o.From != "" && strings.TrimSuffix(o.From, "/") == strings.TrimSuffix(o.To, "/") {
		problems = append(problems, fmt.Errorf("--from and --to are both %q: promotion copies to another registry or prefix", o.From))
	}
	if (len(o.Policy.PublicKey) == 0) == (o.Policy.Keyless == nil) {
		problems = append(problems, errors.New("the signing policy: give either --key cosign.pub or --certificate-identity ID with --certificate-oidc-issuer ISSUER (keyless)"))
	}
	if o.Policy.Keyless != nil && (o.Policy.Keyless.Identity == "" || o.Policy.Keyless.Issuer == "") {
		problems = append(problems, errors.New("keyless policy: both --certificate-identity and --certificate-oidc-issuer are needed"))
	}
	if o.Policy.Repository == "" {
		problems = append(problems, errors.New("--source-url is required: the repository the provenance must name, e.g. https://github.com/darktower/delivery"))
	}
	if len(o.Services) == 0 {
		problems = append(problems, errors.New("no services to promote"))
	}
	if len(o.Kustomizations) > 0 {
		if err := o.checkPins(); err != nil {
			problems = append(problems, err)
		}
	}
	return errors.Join(problems...)
}

// checkPins plans the pins (to a placeholder digest) without writing:
// overlays the promoted images cannot pin are refused before anything is
// copied.
func (o Options) checkPins() error {
	digests := map[string]string{}
	for _, svc := range o.Services {
		digests[svc] = "sha256:" + strings.Repeat("0", 64)
	}
	if _, err := overlay.PlanPins(o.kustomizationPaths(), overlay.Pins(o.To, digests)); err != nil {
		return fmt.Errorf("--kustomization cannot be pinned to the promoted images: %s (promote every service they pin, pin every promoted image in one of them, or --kustomization none)", err)
	}
	return nil
}

func (o Options) kustomizationPaths() []string {
	var paths []string
	for _, k := range o.Kustomizations {
		paths = append(paths, k.Path)
	}
	return paths
}

// verify checks one image of the tag against the policy, reading every
// blob of it: the error says what is wrong.
func (o Options) verify(ctx context.Context, svc string, kc authn.Keychain, ropts []remote.Option) (*Image, error) {
	src, err := name.NewRepository(strings.TrimSuffix(o.From, "/") + "/" + svc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", svc, err)
	}
	dst, err := name.NewRepository(strings.TrimSuffix(o.To, "/") + "/" + svc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", svc, err)
	}
	tag := src.Tag(o.Tag)
	desc, err := remote.Get(tag, ropts...)
	if err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("%s: %s does not exist (was %s released to %s?)", svc, tag, o.Tag, o.From)
		}
		return nil, fmt.Errorf("%s: %s: %w", svc, tag, err)
	}
	digest := desc.Digest.String()
	im := &Image{Service: svc, Digest: digest, Source: tag.String() + "@" + digest, Target: dst.Tag(o.Tag).String() + "@" + digest}
	// Production's tag, if there, must already be this digest.
	if have, err := remote.Head(dst.Tag(o.Tag), ropts...); err == nil {
		if have.Digest.String() != digest {
			return nil, fmt.Errorf("%s: %s already exists at %s, not %s: a release tag is never moved (release a new tag)", svc, dst.Tag(o.Tag), have.Digest, digest)
		}
	} else if !notFound(err) {
		return nil, fmt.Errorf("%s: the production registry: %s: %w", svc, dst.Tag(o.Tag), err)
	}
	// The signature and attestation manifests, before and after they are
	// verified: unchanged, they are what is copied.
	artifacts := func() (map[string]string, error) {
		m := map[string]string{}
		for _, t := range cosignTags(digest) {
			d, err := remote.Head(src.Tag(t), ropts...)
			if err != nil {
				if notFound(err) {
					continue // Verify says what is missing
				}
				return nil, fmt.Errorf("%s: %s: %w", svc, src.Tag(t), err)
			}
			m[t] = d.Digest.String()
		}
		return m, nil
	}
	if im.artifacts, err = artifacts(); err != nil {
		return nil, err
	}
	v, err := sign.Verify(ctx, sign.VerifyOptions{Image: src.Digest(digest).String(), PublicKey: o.Policy.PublicKey, Keyless: o.Policy.Keyless, Keychain: kc})
	if err != nil {
		return nil, fmt.Errorf("%s: %s does not verify against the policy: %w", svc, tag, err)
	}
	after, err := artifacts()
	if err != nil {
		return nil, err
	}
	if !maps.Equal(after, im.artifacts) || len(after) != 2 {
		return nil, fmt.Errorf("%s: %s: the signature or attestations changed while they were verified (%v, then %v): run the promotion again", svc, tag, im.artifacts, after)
	}
	verified := 0
	for _, n := range v.Attestations {
		verified += n
	}
	if v.StoredSignatures != v.Signatures || v.StoredAttestations != verified {
		return nil, fmt.Errorf("%s: %s: %d of %d signature(s) and %d of %d attestation(s) verify: the others were altered or signed by someone else (nothing of it is copied)",
			svc, tag, v.Signatures, v.StoredSignatures, verified, v.StoredAttestations)
	}
	im.Signatures, im.Attestations = v.Signatures, v.Attestations
	platforms, err := im.readContent(desc, ropts)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: content: %w", svc, tag, err)
	}
	if err := im.checkStatements(v.Statements, o.Tag, o.Policy.Repository, platforms); err != nil {
		return nil, fmt.Errorf("%s: %s (%s): %w", svc, tag, digest, err)
	}
	return im, nil
}

// readContent reads every manifest and blob of the image, each checked
// against its digest as it is read; returns the platform images' digests.
func (im *Image) readContent(desc *remote.Descriptor, ropts []remote.Option) ([]string, error) {
	var images []v1.Image
	var platforms []string
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, d := range m.Manifests {
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("platform image %s: %w", d.Digest, err)
			}
			images = append(images, img)
			platforms = append(platforms, d.Digest.String())
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			return nil, err
		}
		images = append(images, img)
		platforms = append(platforms, desc.Digest.String())
	}
	for _, img := range images {
		if _, err := img.RawConfigFile(); err != nil { // checked against the manifest's config digest
			return nil, fmt.Errorf("config: %w", err)
		}
		im.Blobs++
		layers, err := img.Layers()
		if err != nil {
			return nil, err
		}
		for _, l := range layers {
			d, _ := l.Digest()
			rc, err := l.Compressed() // verifies the digest at EOF
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", d, err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", d, err)
			}
			im.Blobs++
			im.Bytes += n
		}
	}
	return platforms, nil
}

// checkStatements applies the policy to the verified attestations: the
// vulnerability gate passed for every platform image, and the provenance
// names the repository and this tag.
func (im *Image) checkStatements(statements []*sign.Statement, tag, repository string, platforms []string) error {
	var problems []error
	provenances, vulns := 0, 0
	for _, st := range statements {
		switch st.PredicateType {
		case sign.PredicateVuln:
			vulns++
			var p struct {
				Invocation struct {
					Parameters map[string]string `json:"parameters"`
				} `json:"invocation"`
				Scanner struct {
					URI    string `json:"uri"`
					Result []struct {
						Service  string `json:"service"`
						Platform string `json:"platform"`
						Digest   string `json:"digest"`
						Blocking int    `json:"blocking"`
					} `json:"result"`
				} `json:"scanner"`
			}
			if err := json.Unmarshal(st.Predicate, &p); err != nil {
				problems = append(problems, fmt.Errorf("the vulnerability attestation does not parse: %w", err))
				continue
			}
			gate := p.Invocation.Parameters["severity-threshold"]
			if g := p.Invocation.Parameters["gate"]; g != "" {
				gate = g
			}
			if gate == "" {
				problems = append(problems, errors.New("the vulnerability attestation names no gate (severity-threshold or gate)"))
			}
			scanned := map[string]bool{}
			for _, r := range p.Scanner.Result {
				if r.Blocking > 0 {
					problems = append(problems, fmt.Errorf("the vulnerability attestation records %d blocking finding(s) in %s (%s): the gate did not pass", r.Blocking, r.Service, r.Platform))
				}
				if r.Service != im.Service {
					problems = append(problems, fmt.Errorf("the vulnerability attestation is about %q, not %s", r.Service, im.Service))
				}
				scanned[r.Digest] = true
			}
			for _, d := range platforms {
				if !scanned[d] {
					problems = append(problems, fmt.Errorf("the vulnerability attestation does not cover platform image %s", d))
				}
			}
			im.Gate, im.Scanned = gate, len(p.Scanner.Result)
		case sign.PredicateSLSA:
			provenances++
			var p struct {
				BuildDefinition struct {
					ExternalParameters map[string]string `json:"externalParameters"`
					InternalParameters struct {
						Tag string `json:"tag"`
					} `json:"internalParameters"`
					ResolvedDependencies []struct {
						URI    string            `json:"uri"`
						Digest map[string]string `json:"digest"`
					} `json:"resolvedDependencies"`
				} `json:"buildDefinition"`
				RunDetails struct {
					Builder struct {
						ID string `json:"id"`
					} `json:"builder"`
				} `json:"runDetails"`
			}
			if err := json.Unmarshal(st.Predicate, &p); err != nil {
				problems = append(problems, fmt.Errorf("the provenance does not parse: %w", err))
				continue
			}
			bd := p.BuildDefinition
			if v := bd.ExternalParameters["version"]; v != tag {
				problems = append(problems, fmt.Errorf("re-tagged: the provenance says this digest was built as version %q, not %s", v, tag))
			}
			if want := im.Service + ":" + build.TagFor(tag); bd.InternalParameters.Tag != want {
				problems = append(problems, fmt.Errorf("re-tagged: the provenance names image %q, not %s", bd.InternalParameters.Tag, want))
			}
			var repos []string
			found := false
			for _, d := range bd.ResolvedDependencies {
				src, ok := strings.CutPrefix(d.URI, "git+")
				if !ok {
					continue
				}
				repo, rev, _ := strings.Cut(src, "@")
				repos = append(repos, repo)
				if sameRepository(repo, repository) {
					found = true
					im.Provenance = Provenance{Repository: repo, Revision: rev, Builder: p.RunDetails.Builder.ID, Version: bd.ExternalParameters["version"]}
				}
			}
			if !found {
				problems = append(problems, fmt.Errorf("the provenance names source %v, not %s", repos, repository))
			}
		}
	}
	if provenances == 0 || vulns == 0 {
		problems = append(problems, errors.New("no verified provenance or vulnerability attestation"))
	}
	return errors.Join(problems...)
}

func sameRepository(a, b string) bool {
	norm := func(s string) string { return strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(s, "/"), ".git")) }
	return norm(a) == norm(b)
}

// cosignTags are the tags cosign stores a digest's signatures and
// attestations under (what sign.Publish writes).
func cosignTags(digest string) []string {
	base := strings.Replace(digest, ":", "-", 1)
	return []string{base + ".sig", base + ".att"}
}

// copyImage copies the image by digest, then its signature and
// attestation manifests under their cosign tags, verbatim; what the
// target already has (same digest) is not written again.
func copyImage(im *Image, o Options, ropts []remote.Option) error {
	src, _ := name.NewRepository(strings.TrimSuffix(o.From, "/") + "/" + im.Service)
	dst, _ := name.NewRepository(strings.TrimSuffix(o.To, "/") + "/" + im.Service)
	if have, err := remote.Head(dst.Digest(im.Digest), ropts...); err != nil || have.Digest.String() != im.Digest {
		desc, err := remote.Get(src.Digest(im.Digest), ropts...)
		if err != nil {
			return err
		}
		if err := writeDescriptor(dst.Digest(im.Digest), desc, ropts); err != nil {
			return err
		}
		im.Copied = append(im.Copied, "index "+short(im.Digest))
	}
	for _, t := range cosignTags(im.Digest) {
		if have, err := remote.Head(dst.Tag(t), ropts...); err == nil && have.Digest.String() == im.artifacts[t] {
			continue
		}
		desc, err := remote.Get(src.Digest(im.artifacts[t]), ropts...)
		if err != nil {
			return fmt.Errorf("%s@%s: %w", src, im.artifacts[t], err)
		}
		if err := writeDescriptor(dst.Tag(t), desc, ropts); err != nil {
			return fmt.Errorf("%s: %w", dst.Tag(t), err)
		}
		im.Copied = append(im.Copied, strings.TrimPrefix(filepath.Ext(t), "."))
	}
	return nil
}

// writeDescriptor writes an index or image (its blobs first) to ref.
func writeDescriptor(ref name.Reference, desc *remote.Descriptor, opts []remote.Option) error {
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		return remote.WriteIndex(ref, idx, opts...)
	}
	img, err := desc.Image()
	if err != nil {
		return err
	}
	return remote.Write(ref, img, opts...)
}

// tagImage tags the copied digest; false when the tag was already there.
func tagImage(im *Image, o Options, ropts []remote.Option) (bool, error) {
	dst, _ := name.NewRepository(strings.TrimSuffix(o.To, "/") + "/" + im.Service)
	tag := dst.Tag(o.Tag)
	if have, err := remote.Head(tag, ropts...); err == nil {
		if have.Digest.String() == im.Digest {
			return false, nil
		}
		return false, fmt.Errorf("%s was set to %s during the promotion: a release tag is never moved", tag, have.Digest)
	}
	desc, err := remote.Get(dst.Digest(im.Digest), ropts...)
	if err != nil {
		return false, err
	}
	return true, remote.Put(tag, desc, ropts...)
}

// pin rewrites the overlays' pins to the promoted digests and records
// the change as a patch.
func (o Options) pin(res *Result) error {
	digests := map[string]string{}
	for _, im := range res.Images {
		digests[im.Service] = im.Digest
	}
	edits, err := overlay.PinImages(o.kustomizationPaths(), overlay.Pins(o.To, digests))
	if err != nil {
		return fmt.Errorf("pinning %s: %w (the images are promoted; only the pins are not written)", strings.Join(o.kustomizationPaths(), ", "), err)
	}
	var patch strings.Builder
	for i, e := range edits {
		path := o.Kustomizations[i].patchPath()
		res.Pinned = append(res.Pinned, path)
		if e.Changed() {
			patch.WriteString(unifiedDiff(path, string(e.Before), string(e.After)))
		}
	}
	res.Patch = patch.String()
	return nil
}

func notFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && (terr.StatusCode == http.StatusNotFound)
}

func short(digest string) string {
	if _, hex, ok := strings.Cut(digest, ":"); ok && len(hex) > 12 {
		return digest[:len(digest)-len(hex)] + hex[:12]
	}
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

func predicateCounts(m map[string]int) string {
	names := map[string]string{sign.PredicateCycloneDX: "SBOM", sign.PredicateVuln: "vulnerabilities", sign.PredicateSLSA: "provenance"}
	var parts []string
	for _, p := range sign.Predicates {
		parts = append(parts, fmt.Sprintf("%s %d", names[p], m[p]))
	}
	return strings.Join(parts, ", ")
}

// summary is the promotion's verification summary, in markdown.
func summary(o Options, res *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Promotion of %s\n\n", res.Tag)
	fmt.Fprintf(&b, "From `%s` to `%s`. ", o.From, o.To)
	if o.Policy.Keyless != nil {
		fmt.Fprintf(&b, "Policy: signed keyless by `%s` (issuer `%s`)", o.Policy.Keyless.Identity, o.Policy.Keyless.Issuer)
	} else {
		fmt.Fprintf(&b, "Policy: signed by the public key with SHA-256 fingerprint `%x` (of its PEM)", sha256.Sum256(o.Policy.PublicKey))
	}
	fmt.Fprintf(&b, "; SBOM, vulnerability and provenance attestations signed the same way; the vulnerability gate passed; the provenance names `%s` and %s.\n\n", o.Policy.Repository, res.Tag)
	b.WriteString("| Image | Digest | Signatures | Attestations | Provenance | Vulnerability gate | Content | Copied | Verifies in production |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, im := range res.Images {
		copied := "already there"
		if len(im.Copied) > 0 {
			copied = strings.Join(im.Copied, ", ")
		}
		ok := "no"
		if im.TargetVerified {
			ok = "yes"
		}
		fmt.Fprintf(&b, "| %s | `%s` | %d | %s | %s@%s, %s, built by %s | passed (blocks on: %s), %d platform image(s) | %d blobs, %.1f MB checked | %s | %s |\n",
			im.Service, im.Digest, im.Signatures, predicateCounts(im.Attestations), im.Provenance.Repository, short(im.Provenance.Revision), im.Provenance.Version,
			im.Provenance.Builder, im.Gate, im.Scanned, im.Blobs, float64(im.Bytes)/1e6, copied, ok)
	}
	if len(res.Pinned) > 0 {
		pinned := "`" + strings.Join(res.Pinned, "`, `") + "`"
		if res.Patch == "" {
			fmt.Fprintf(&b, "\n%s already pin these digests: no change.\n", pinned)
		} else {
			fmt.Fprintf(&b, "\n%s pinned to these digests: the change is `%s` (`git apply %s`).\n", pinned, PatchFile, PatchFile)
			b.WriteString(rollingOut(res.Images))
		}
	}
	return b.String()
}

// pinnedRef is the reference the pins give the image: its production
// repository by digest (no tag), as kustomize renders newName and digest.
func pinnedRef(im *Image) string {
	repo, _, _ := strings.Cut(im.Target, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return repo + "@" + im.Digest
}

// rollingOut says what applying the pins sets moving, service by service,
// and the command that follows or rolls each (a rollout is judged, not
// finished, when the overlay is applied).
func rollingOut(images []*Image) string {
	var b strings.Builder
	b.WriteString("\nHow each service's release rolls out:\n\n")
	for _, im := range images {
		switch im.Service {
		case "global-controller", "meeting-controller":
			fmt.Fprintf(&b, "- %s: Flagger's canary (5 → 10 → 50 → 100%%); follow it with `go run . canary watch --kubeconfig PROD --namespace dark-tower --service %s` (exit 0 promoted, 1 rolled back).\n", im.Service, im.Service)
		case "ac-service":
			fmt.Fprintf(&b, "- %s: held by its partition (infra/overlays/held-rollouts), no pod moves; roll it with `go run . canary roll --kubeconfig PROD --namespace dark-tower --service %s`.\n", im.Service, im.Service)
		case "media-handler":
			fmt.Fprintf(&b, "- %s: **before applying the change**, roll it as a pod-weighted canary with `go run . canary roll --kubeconfig PROD --namespace dark-tower --service %s --image %s` (applied first, its Deployment rolls the release out unjudged; promoted first, the pin then matches what runs). Its analysis reads the clients' media loss (darktower_load_datagrams_total by media_handler): without those series in production's Prometheus every release rolls back.\n",
				im.Service, im.Service, pinnedRef(im))
		default:
			fmt.Fprintf(&b, "- %s: no canary; its Deployment rolls out when applied.\n", im.Service)
		}
	}
	return b.String()
}

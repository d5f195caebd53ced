package promote

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/cosign/v2/pkg/cosign"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/internal/imagetest"
	"github.com/darktower/delivery/pipelines/internal/sigstoretest"
	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/darktower/delivery/pipelines/registry"
	"github.com/darktower/delivery/pipelines/sbom"
	"github.com/darktower/delivery/pipelines/scan"
	"github.com/darktower/delivery/pipelines/sign"
)

const (
	tag      = "v1.2.3"
	repoURL  = "https://github.com/darktower/delivery"
	revision = "0123456789abcdef0123456789abcdef01234567"
)

var services = []string{"media-handler", "meeting-controller"}

// release is a release build: images stamped with the tag, their SBOMs
// and scan (against an empty fixture DB: the gate passes).
type release struct {
	out     string
	images  []*build.Image
	docs    []*sbom.Document
	scanned *scan.Result
	db      *scan.DBInfo
}

func buildRelease(t *testing.T) *release {
	t.Helper()
	amd64 := []catalog.Platform{{OS: "linux", Arch: "amd64"}}
	images := imagetest.BuildVersion(t, "../..", services, amd64, imagetest.DebianBase(t, t.TempDir(), amd64), tag)
	out := t.TempDir()
	res := &build.Result{Images: images}
	if _, err := build.WriteLayout(out, res, tag, revision, imagetest.Epoch); err != nil {
		t.Fatal(err)
	}
	docs, err := sbom.Generate(context.Background(), sbom.Options{Images: images, Out: out, Created: imagetest.Epoch})
	if err != nil {
		t.Fatal(err)
	}
	dbDir := t.TempDir()
	if err := vulndbtest.Write(dbDir, time.Now()); err != nil {
		t.Fatal(err)
	}
	info, err := scan.OpenDB(context.Background(), scan.DBOptions{Dir: dbDir})
	if err != nil {
		t.Fatal(err)
	}
	scanned, err := scan.Scan(context.Background(), scan.Options{Documents: docs.Documents})
	scan.CloseDB()
	if err != nil {
		t.Fatal(err)
	}
	return &release{out: out, images: images, docs: docs.Documents, scanned: scanned, db: info}
}

// publish pushes the release under prefix (tagged with the images' tag)
// and, with a key, signs it as release does and publishes the signatures.
func (r *release) publish(t *testing.T, prefix string, key *sign.Key) []registry.Pushed {
	t.Helper()
	ctx := context.Background()
	pushed, err := registry.Push(ctx, r.images, prefix, authn.DefaultKeychain, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key == nil {
		return pushed
	}
	signed, err := sign.Sign(ctx, sign.Options{Images: r.images, Documents: r.docs, Scan: r.scanned, ScanDB: r.db, Key: key, Out: r.out, Repository: prefix,
		Provenance: sign.Provenance{BuilderID: repoURL + "/.github/workflows/release.yml@refs/tags/" + tag, SourceURL: repoURL, Revision: revision,
			Parameters: map[string]string{"services": strings.Join(services, ","), "version": tag}, Started: time.Now(), Finished: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sign.Publish(ctx, signed.Images, prefix, authn.DefaultKeychain, nil); err != nil {
		t.Fatal(err)
	}
	return pushed
}

// testKey is a password-protected cosign key pair, loaded as release loads --key.
func testKey(t *testing.T) (*sign.Key, []byte) {
	t.Helper()
	b := make([]byte, 12)
	rand.Read(b)
	password := "pw-" + hex.EncodeToString(b)
	keys, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return []byte(password), nil })
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cosign.key")
	if err := os.WriteFile(path, keys.PrivateBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := sign.LoadKey(path, func(k string) string {
		if k == sign.EnvPassword {
			return password
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	return key, keys.PublicBytes
}

const kustomization = `# Production: promotion rewrites the pins.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: dark-tower
resources:
  - ../../base
images:
  - name: ghcr.io/darktower/media-handler
    newName: ghcr.io/darktower/media-handler
    digest: sha256:ef04169825f3b65b31377875fb4749bb1bd86ea8a959181986497ba41bfd6953
  - name: ghcr.io/darktower/meeting-controller
    newName: ghcr.io/darktower/meeting-controller
    digest: sha256:634a4c6d6676154996d9bf423792edc1777af5f9d47f7fbb2389cc59319d3297
labels:
  - pairs:
      app.kubernetes.io/instance: dark-tower-prod
    includeSelectors: false
`

// repositories lists what a registry holds: repository → tags.
func repositories(t *testing.T, host string) map[string][]string {
	t.Helper()
	reg, err := name.NewRegistry(host)
	if err != nil {
		t.Fatal(err)
	}
	repos, err := remote.Catalog(context.Background(), reg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, r := range repos {
		tags, err := remote.List(reg.Repo(r))
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(tags)
		out[r] = tags
	}
	return out
}

func TestPromoteVerifiesEverythingThenCopiesWithSignaturesAndPins(t *testing.T) {
	ctx := context.Background()
	key, pub := testKey(t)
	rel := buildRelease(t)
	src := testreg.Distribution(t)
	prod := testreg.DistributionServer(t)
	pushed := rel.publish(t, src+"/release", key)

	options := func(from string) Options {
		return Options{Tag: tag, From: from, To: prod.Addr + "/darktower", Services: services,
			Policy: Policy{PublicKey: pub, Repository: repoURL}}
	}
	refused := func(what string, o Options, want ...string) {
		t.Helper()
		var progress bytes.Buffer
		o.Progress = &progress
		_, err := Promote(ctx, o)
		if err == nil {
			t.Errorf("%s: promoted, want a refusal", what)
			return
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: the error does not say %q:\n%v", what, w, err)
			}
		}
		if got := repositories(t, prod.Addr); len(got) > 0 {
			t.Fatalf("%s: the production registry has %v after a refusal", what, got)
		}
		t.Logf("%s refused:\n%v", what, err)
	}

	// Bad input, before any registry is asked.
	bad := options(src + "/release")
	bad.Tag, bad.To, bad.Policy.PublicKey = "1.2.3", "", nil
	refused("bad input", bad, `--tag "1.2.3" is not a release tag`, "--to is required", "--key cosign.pub")

	// Unsigned: pushed without signatures.
	rel.publish(t, src+"/unsigned", nil)
	refused("unsigned", options(src+"/unsigned"), "nothing was copied", "media-handler: "+src+"/unsigned/media-handler:"+tag+" does not verify", "signature", "meeting-controller:")

	// Signed by another key.
	_, otherPub := testKey(t)
	o := options(src + "/release")
	o.Policy.PublicKey = otherPub
	refused("another key", o, "nothing was copied", "does not verify against the policy")

	// Built from another repository.
	o = options(src + "/release")
	o.Policy.Repository = "https://github.com/someone/else"
	refused("another repository", o, "nothing was copied", "the provenance names source [https://github.com/darktower/delivery], not https://github.com/someone/else")

	// Re-tagged: v1.2.4 points at v1.2.3's digests (signed, but built as v1.2.3).
	for _, im := range rel.images {
		ref, _ := name.ParseReference(src + "/release/" + im.Service + "@" + im.Digest)
		desc, err := remote.Get(ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Tag(ref.Context().Tag("v1.2.4"), desc); err != nil {
			t.Fatal(err)
		}
	}
	o = options(src + "/release")
	o.Tag = "v1.2.4"
	refused("re-tagged", o, "nothing was copied", `re-tagged: the provenance says this digest was built as version "v1.2.3", not v1.2.4`)

	// Tampered: one attestation altered (the vulnerability attestation's
	// gate edited, its signature kept), the other image intact: neither
	// is copied.
	rel.publish(t, src+"/tampered-att", key)
	alterAttestation(t, src+"/tampered-att/"+rel.images[0].Service, rel.images[0].Digest)
	refused("an altered attestation", options(src+"/tampered-att"), "nothing was copied", rel.images[0].Service+": ", "1 of the 3 attestations stored do not verify")

	// Tampered: a layer changed and the signatures carried over to the new digest.
	rel.publish(t, src+"/tampered-layer", key)
	changeLayer(t, src+"/tampered-layer/"+rel.images[1].Service, rel.images[1].Digest)
	refused("a changed layer", options(src+"/tampered-layer"), "nothing was copied", rel.images[1].Service+": ", "signature")

	// Tampered in the registry's storage: a layer blob's bytes changed
	// under its digest.
	compromised := testreg.DistributionServer(t)
	rel.publish(t, compromised.Addr+"/release", key)
	corruptBlob(t, compromised, rel.images[0])
	refused("a corrupted blob", options(compromised.Addr+"/release"), "nothing was copied", rel.images[0].Service+": ", "content: layer")

	// The release, promoted.
	dir := t.TempDir()
	kpath := filepath.Join(dir, "kustomization.yaml")
	if err := os.WriteFile(kpath, []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	o = options(src + "/release")
	o.Kustomizations, o.Out = []Kustomization{{Path: kpath, PatchPath: "kustomization.yaml"}}, filepath.Join(dir, "out")
	var progress bytes.Buffer
	o.Progress = &progress
	res, err := Promote(ctx, o)
	t.Logf("promotion:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	for i, im := range rel.images {
		target := prod.Addr + "/darktower/" + im.Service + ":" + tag
		v, err := sign.Verify(ctx, sign.VerifyOptions{Image: target, PublicKey: pub})
		if err != nil {
			t.Errorf("%s does not verify in production: %v", target, err)
			continue
		}
		if v.Digest != im.Digest || v.Signatures != 1 || v.Attestations[sign.PredicateSLSA] != 1 || v.Attestations[sign.PredicateVuln] != 1 || v.Attestations[sign.PredicateCycloneDX] != 1 {
			t.Errorf("%s verified %+v, want %s with one signature and one attestation of each type", target, v, im.Digest)
		}
		if !strings.HasSuffix(pushed[i].Ref, "@"+im.Digest) {
			t.Errorf("pushed %s, built %s", pushed[i].Ref, im.Digest)
		}
		sameArtifacts(t, src+"/release/"+im.Service, prod.Addr+"/darktower/"+im.Service, im.Digest)
	}
	// The pins: the overlay rewritten, the patch applies to the original.
	pinned, _ := os.ReadFile(kpath)
	for _, im := range rel.images {
		if !strings.Contains(string(pinned), "newName: "+prod.Addr+"/darktower/"+im.Service+"\n    digest: "+im.Digest) {
			t.Errorf("the overlay does not pin %s to %s:\n%s", im.Service, im.Digest, pinned)
		}
	}
	apply := t.TempDir()
	os.WriteFile(filepath.Join(apply, "kustomization.yaml"), []byte(kustomization), 0o644)
	cmd := exec.Command("git", "apply", filepath.Join(o.Out, PatchFile))
	cmd.Dir = apply
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git apply: %v\n%s\n%s", err, out, res.Patch)
	}
	if applied, _ := os.ReadFile(filepath.Join(apply, "kustomization.yaml")); !bytes.Equal(applied, pinned) {
		t.Errorf("the patch applied gives\n%s\nnot\n%s", applied, pinned)
	}
	summary, err := os.ReadFile(filepath.Join(o.Out, SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range rel.images {
		if !strings.Contains(string(summary), "| "+im.Service+" | `"+im.Digest+"` | 1 | SBOM 1, vulnerabilities 1, provenance 1 | "+repoURL+"@"+revision[:12]+", "+tag) {
			t.Errorf("the summary lacks %s's row:\n%s", im.Service, summary)
		}
		// And what applying the pins sets moving, with its command.
		if !strings.Contains(string(summary), "- "+im.Service+": ") || !strings.Contains(string(summary), "--service "+im.Service) {
			t.Errorf("the summary does not say how %s rolls out:\n%s", im.Service, summary)
		}
	}
	// media-handler's canary is run with the digest the pin gives it.
	for _, im := range rel.images {
		if im.Service == "media-handler" && !strings.Contains(string(summary), "--image "+prod.Addr+"/darktower/media-handler@"+im.Digest+"`") {
			t.Errorf("the summary does not give media-handler's canary the pinned reference:\n%s", summary)
		}
	}
	t.Logf("summary:\n%s\npatch:\n%s", summary, res.Patch)

	// Again: nothing to copy, nothing to pin.
	res, err = Promote(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range res.Images {
		if len(im.Copied) > 0 {
			t.Errorf("the second promotion copied %v of %s", im.Copied, im.Service)
		}
	}
	if res.Patch != "" {
		t.Errorf("the second promotion changed the pins:\n%s", res.Patch)
	}

	// Production's tag is never moved: promoting other content under it is refused.
	other := testreg.Distribution(t)
	for _, im := range rel.images {
		ref, _ := name.NewTag(other + "/release/" + im.Service + ":" + tag)
		if err := remote.WriteIndex(ref, mutate.IndexMediaType(empty.Index, types.OCIImageIndex)); err != nil {
			t.Fatal(err)
		}
	}
	o = options(other + "/release")
	if _, err := Promote(ctx, o); err == nil || !strings.Contains(err.Error(), "a release tag is never moved") {
		t.Errorf("promoting other content under a promoted tag: %v", err)
	}
}

func TestPromotionStoppedHalfWayIsCompletedByRunningItAgain(t *testing.T) {
	ctx := context.Background()
	key, pub := testKey(t)
	rel := buildRelease(t)
	src := testreg.Distribution(t)
	rel.publish(t, src+"/release", key)
	prod := testreg.DistributionServer(t)
	o := Options{Tag: tag, From: src + "/release", To: prod.Addr + "/darktower", Services: services, Policy: Policy{PublicKey: pub, Repository: repoURL}}

	// The production registry goes away once the first image is copied.
	first := rel.images[0].Service
	o.Progress = writerFunc(func(line string) {
		if strings.Contains(line, first) && strings.Contains(line, " copied ") {
			prod.Stop()
		}
	})
	_, err := Promote(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "copying "+rel.images[1].Service) || !strings.Contains(err.Error(), "run the promotion again") {
		t.Fatalf("with the registry stopped half way: %v", err)
	}
	t.Logf("stopped half way: %v", err)
	prod.Start()
	half := repositories(t, prod.Addr)
	if tags := half["darktower/"+first]; slices.Contains(tags, tag) || len(tags) != 2 {
		t.Errorf("after the failure %s has tags %v, want its .sig and .att and no %s", first, tags, tag)
	}

	var progress bytes.Buffer
	o.Progress = &progress
	res, err := Promote(ctx, o)
	t.Logf("re-run:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Images[0].Copied; !slices.Equal(got, []string{"tag " + tag}) {
		t.Errorf("the re-run wrote %v of %s, want only its tag", got, first)
	}
	if got := res.Images[1].Copied; len(got) != 4 {
		t.Errorf("the re-run wrote %v of %s, want index, sig, att, tag", got, rel.images[1].Service)
	}
	// No duplicates: each repository has the tag and one .sig and .att,
	// the same manifests as the release registry's.
	all := repositories(t, prod.Addr)
	if len(all) != len(services) {
		t.Errorf("production has %v", all)
	}
	for _, im := range rel.images {
		h := strings.Replace(im.Digest, ":", "-", 1)
		if got, want := all["darktower/"+im.Service], []string{h + ".att", h + ".sig", tag}; !slices.Equal(got, want) {
			t.Errorf("%s has tags %v, want %v", im.Service, got, want)
		}
		sameArtifacts(t, src+"/release/"+im.Service, prod.Addr+"/darktower/"+im.Service, im.Digest)
		v, err := sign.Verify(ctx, sign.VerifyOptions{Image: prod.Addr + "/darktower/" + im.Service + ":" + tag, PublicKey: pub})
		if err != nil || v.Signatures != 1 || v.StoredAttestations != len(sign.Predicates) {
			t.Errorf("%s in production: %+v, %v", im.Service, v, err)
		}
	}
}

type writerFunc func(string)

func (f writerFunc) Write(p []byte) (int, error) { f(string(p)); return len(p), nil }

// sameArtifacts: the target's .sig and .att are the source's manifests.
func sameArtifacts(t *testing.T, from, to, digest string) {
	t.Helper()
	for _, suffix := range cosignTags(digest) {
		a, err := remote.Head(mustTag(t, from+":"+suffix))
		if err != nil {
			t.Fatal(err)
		}
		b, err := remote.Head(mustTag(t, to+":"+suffix))
		if err != nil {
			t.Errorf("%s:%s: %v", to, suffix, err)
			continue
		}
		if a.Digest != b.Digest {
			t.Errorf("%s:%s is %s, the release's is %s", to, suffix, b.Digest, a.Digest)
		}
	}
}

func mustTag(t *testing.T, s string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(s)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// alterAttestation rewrites one statement of repo@digest's .att (its
// vulnerability attestation's predicate edited), keeping its signature.
func alterAttestation(t *testing.T, repo, digest string) {
	t.Helper()
	attTag := mustTag(t, repo+":"+strings.Replace(digest, ":", "-", 1)+".att")
	img, err := remote.Image(attTag)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := mutate.MediaType(empty.Image, m.MediaType)
	out = mutate.ConfigMediaType(out, m.Config.MediaType)
	altered := false
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(rc)
		rc.Close()
		raw := buf.Bytes()
		var env map[string]any
		if err := json.Unmarshal(raw, &env); err != nil {
			t.Fatal(err)
		}
		payload, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
		if bytes.Contains(payload, []byte(sign.PredicateVuln)) {
			payload = bytes.Replace(payload, []byte(`"severity-threshold":"`), []byte(`"severity-threshold":"NONE`), 1)
			env["payload"] = base64.StdEncoding.EncodeToString(payload)
			raw, _ = json.Marshal(env)
			altered = true
		}
		out, err = mutate.Append(out, mutate.Addendum{Layer: static.NewLayer(raw, m.Layers[i].MediaType), Annotations: m.Layers[i].Annotations})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !altered {
		t.Fatal("no vulnerability attestation to alter")
	}
	if err := remote.Write(attTag, out); err != nil {
		t.Fatal(err)
	}
}

// changeLayer pushes repo:tag as the image with one more layer, and
// copies the original's signature and attestations to the new digest.
func changeLayer(t *testing.T, repo, digest string) {
	t.Helper()
	orig, err := remote.Index(mustTag(t, repo+":"+tag))
	if err != nil {
		t.Fatal(err)
	}
	im, err := orig.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.IndexMediaType(empty.Index, im.MediaType)
	for _, d := range im.Manifests {
		img, err := orig.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		img, err = mutate.AppendLayers(img, static.NewLayer([]byte("not what was signed"), types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: d.Platform}})
	}
	if err := remote.WriteIndex(mustTag(t, repo+":"+tag), idx); err != nil {
		t.Fatal(err)
	}
	nd, _ := idx.Digest()
	for i, suffix := range cosignTags(digest) {
		img, err := remote.Image(mustTag(t, repo+":"+suffix))
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(mustTag(t, repo+":"+cosignTags(nd.String())[i]), img); err != nil {
			t.Fatal(err)
		}
	}
}

// corruptBlob changes one byte of the image's last layer in the
// registry's storage, keeping its size and name.
func corruptBlob(t *testing.T, s *testreg.Server, im *build.Image) {
	t.Helper()
	idx, err := im.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := im.Index.Image(idx.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := layers[len(layers)-1].Digest()
	var path string
	filepath.WalkDir(s.Storage(), func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Name() == "data" && filepath.Base(filepath.Dir(p)) == d.Hex {
			path = p
		}
		return nil
	})
	if path == "" {
		t.Fatalf("no blob %s in %s", d, s.Storage())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0xff
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Keyless: signed with a certificate for the release workflow's identity
// (a local Fulcio with a test CA; no transparency log here), promoted
// against that identity; another identity is refused with nothing copied.
func TestPromoteAgainstAKeylessIdentity(t *testing.T) {
	ctx := context.Background()
	token := sigstoretest.FakeJWT(map[string]string{"sub": sigstoretest.TokenSubject, "iss": sigstoretest.ActionsIssuer})
	sigstoretest.ActionsTokenServer(t, token)
	ca := sigstoretest.NewCA(t)
	key, err := sign.KeylessKey(ctx, sign.KeylessOptions{FulcioURL: sigstoretest.Fulcio(t, ca, token, nil), RekorURL: sigstoretest.RefusingRekor(t)})
	if err != nil {
		t.Fatal(err)
	}
	key.Rekor = nil
	rel := buildRelease(t)
	src := testreg.Distribution(t)
	prod := testreg.Distribution(t)
	rel.publish(t, src+"/release", key)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	id := &sign.KeylessIdentity{Identity: sigstoretest.WorkflowIdentity, Issuer: sigstoretest.ActionsIssuer, Roots: roots, SkipTransparencyLog: true}
	other := *id
	other.Identity = "https://github.com/darktower/delivery/.github/workflows/release.yml@refs/heads/main"
	o := Options{Tag: tag, From: src + "/release", To: prod + "/darktower", Services: services, Policy: Policy{Keyless: &other, Repository: repoURL}}
	if _, err := Promote(ctx, o); err == nil || !strings.Contains(err.Error(), "nothing was copied") {
		t.Fatalf("another identity: %v", err)
	} else {
		t.Logf("another identity refused: %v", err)
	}
	if got := repositories(t, prod); len(got) > 0 {
		t.Fatalf("production has %v after a refusal", got)
	}
	o.Policy.Keyless = id
	res, err := Promote(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range res.Images {
		if _, err := sign.Verify(ctx, sign.VerifyOptions{Image: prod + "/darktower/" + im.Service + ":" + tag, Keyless: id}); err != nil {
			t.Errorf("%s does not verify keyless in production: %v", im.Service, err)
		}
	}
	if !strings.Contains(res.Summary, "signed keyless by `"+sigstoretest.WorkflowIdentity+"`") {
		t.Errorf("the summary does not name the identity:\n%s", res.Summary)
	}
}

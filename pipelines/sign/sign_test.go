package sign

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"

	"github.com/darktower/delivery/internal/vulndbtest"
	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/internal/imagetest"
	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/darktower/delivery/pipelines/registry"
	"github.com/darktower/delivery/pipelines/sbom"
	"github.com/darktower/delivery/pipelines/scan"
)

// keyPair writes a password-protected cosign key pair; the password is
// random, so finding it anywhere later is a leak.
func keyPair(t *testing.T) (privPath string, pub []byte, password string) {
	t.Helper()
	b := make([]byte, 12)
	rand.Read(b)
	password = "pw-" + hex.EncodeToString(b)
	keys, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return []byte(password), nil })
	if err != nil {
		t.Fatal(err)
	}
	privPath = filepath.Join(t.TempDir(), "cosign.key")
	if err := os.WriteFile(privPath, keys.PrivateBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return privPath, keys.PublicBytes, password
}

// signedBuild builds two services, writes SBOMs, scans them against an
// empty fixture DB and signs them with key; it returns the output
// directory, the stage results and the signing error.
func signedBuild(t *testing.T, key *Key, progress *bytes.Buffer) (string, *build.Result, *Result, error) {
	t.Helper()
	o, res := signInputs(t, key, progress)
	signed, err := Sign(context.Background(), o)
	return o.Out, res, signed, err
}

// signInputs are the signing stage's inputs for two services built,
// cataloged and scanned against an empty fixture DB.
func signInputs(t *testing.T, key *Key, progress *bytes.Buffer) (Options, *build.Result) {
	t.Helper()
	amd64 := []catalog.Platform{{OS: "linux", Arch: "amd64"}}
	images := imagetest.Build(t, "../..", []string{"media-handler", "meeting-controller"}, amd64, imagetest.DebianBase(t, t.TempDir(), amd64))
	out := t.TempDir()
	res := &build.Result{Images: images}
	if _, err := build.WriteLayout(out, res, "0.0.0-test", "test", imagetest.Epoch); err != nil {
		t.Fatal(err)
	}
	docs, err := sbom.Generate(context.Background(), sbom.Options{Images: res.Images, Out: out, Created: imagetest.Epoch})
	if err != nil {
		t.Fatal(err)
	}
	db := t.TempDir()
	if err := vulndbtest.Write(db, time.Now()); err != nil {
		t.Fatal(err)
	}
	info, err := scan.OpenDB(context.Background(), scan.DBOptions{Dir: db})
	if err != nil {
		t.Fatal(err)
	}
	scanned, err := scan.Scan(context.Background(), scan.Options{Documents: docs.Documents})
	scan.CloseDB()
	if err != nil {
		t.Fatal(err)
	}
	return Options{Images: res.Images, Documents: docs.Documents, Scan: scanned, ScanDB: info, Key: key, Out: out,
		Provenance: Provenance{BuilderID: "local:test", SourceURL: "https://example.com/src", Revision: "test",
			Parameters: map[string]string{"services": "media-handler,meeting-controller"}, Started: time.Now(), Finished: time.Now()},
		Progress: progress}, res
}

func TestSignPushVerifyAndPromote(t *testing.T) {
	privPath, pub, password := keyPair(t)
	env := func(k string) string {
		if k == EnvPassword {
			return password
		}
		return ""
	}
	key, err := LoadKey(privPath, env)
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	out, res, signed, err := signedBuild(t, key, &progress)
	if err != nil {
		t.Fatal(err)
	}

	host := testreg.Distribution(t)
	prefix := host + "/darktower"
	ctx := context.Background()
	pushed, err := registry.Push(ctx, res.Images, prefix, authn.DefaultKeychain, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctx, signed.Images, prefix, authn.DefaultKeychain, &progress); err != nil {
		t.Fatal(err)
	}
	tagRef := strings.Split(pushed[0].Ref, "@")[0]

	v, err := Verify(ctx, VerifyOptions{Image: tagRef, PublicKey: pub})
	if err != nil {
		t.Fatalf("verify of a signed, pushed image: %v", err)
	}
	if v.Signatures != 1 || v.Attestations[PredicateCycloneDX] != 1 || v.Attestations[PredicateVuln] != 1 || v.Attestations[PredicateSLSA] != 1 {
		t.Errorf("verified %+v, want one signature and one attestation of each type", v)
	}
	checkAttestationPayloads(t, pushed[0].Ref)

	// The wrong public key.
	_, otherPub, _ := keyPair(t)
	if _, err := Verify(ctx, VerifyOptions{Image: tagRef, PublicKey: otherPub}); err == nil {
		t.Error("verify with another key passed")
	} else {
		t.Logf("wrong key refused: %v", err)
	}

	// Promotion-style copy (index, signature and attestations by digest
	// and tag) to a second registry keeps everything verifiable.
	second := testreg.Distribution(t) + "/promoted"
	copyRepo(t, pushed[0].Ref, second+"/"+res.Images[0].Service, res.Images[0].Digest)
	if _, err := Verify(ctx, VerifyOptions{Image: second + "/" + res.Images[0].Service + "@" + res.Images[0].Digest, PublicKey: pub}); err != nil {
		t.Errorf("verify after copying to a second registry: %v", err)
	}

	// Different content re-pushed under the same tag: the tag now names an
	// unsigned digest.
	tag, err := name.NewTag(tagRef)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, res.Images[1].Index); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, VerifyOptions{Image: tagRef, PublicKey: pub}); err == nil {
		t.Error("verify passed for a tag re-pushed with other content")
	} else {
		t.Logf("re-pushed tag refused: %v", err)
	}

	// The layout carries the signature and attestations before any push.
	index, err := os.ReadFile(filepath.Join(out, build.LayoutDir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range signed.Images {
		h := strings.Replace(s.Digest, ":", "-", 1)
		for _, suffix := range []string{".sig", ".att"} {
			if !strings.Contains(string(index), h+suffix) {
				t.Errorf("the layout has no %s%s", h, suffix)
			}
		}
	}

	// No key material or password anywhere: output, logs, images.
	raw, _ := os.ReadFile(privPath)
	secrets := []string{password}
	for _, line := range strings.Split(string(raw), "\n") {
		if len(line) > 20 && !strings.HasPrefix(line, "-----") {
			secrets = append(secrets, line)
		}
	}
	noSecrets(t, "progress output", progress.Bytes(), secrets)
	filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(path)
			noSecrets(t, path, b, secrets)
		}
		return nil
	})
}

func noSecrets(t *testing.T, where string, b []byte, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%s contains key material or the password", where)
			return
		}
	}
}

// checkAttestationPayloads decodes each attestation of ref and checks its
// subject is the image's digest.
func checkAttestationPayloads(t *testing.T, ref string) {
	t.Helper()
	digestRef, err := name.NewDigest(ref) // repo:tag@digest
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(digestRef.Context().Tag(strings.Replace(digestRef.DigestStr(), ":", "-", 1) + ".att"))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(rc)
		rc.Close()
		st, err := DecodeStatement(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		seen[st.PredicateType] = true
		subjects := st.Subjects()
		if len(subjects) == 0 || subjects[0] != digestRef.DigestStr() {
			t.Errorf("%s attestation subjects %v, want %s first", st.PredicateType, subjects, digestRef.DigestStr())
		}
	}
	for _, p := range Predicates {
		if !seen[p] {
			t.Errorf("no %s attestation payload", p)
		}
	}
}

// copyRepo copies an index and its cosign artifacts (by digest, then the
// .sig/.att tags) from ref's repository to dst.
func copyRepo(t *testing.T, ref, dst, digest string) {
	t.Helper()
	from, err := name.NewDigest(ref) // repo:tag@digest
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(from)
	if err != nil {
		t.Fatal(err)
	}
	to, err := name.NewDigest(dst + "@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(to, idx); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{".sig", ".att"} {
		tag := strings.Replace(digest, ":", "-", 1) + suffix
		img, err := remote.Image(from.Context().Tag(tag))
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(to.Context().Tag(tag), img); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDevelopmentKeyIsCreatedOnceAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	first, err := DevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	second, err := DevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Development || !bytes.Equal(first.PublicPEM, second.PublicPEM) {
		t.Fatal("the development key was not reused")
	}
	info, err := os.Stat(filepath.Join(dir, "cosign.key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v, %v", info.Mode(), err)
	}
}

func TestKeyLoadingFailuresNameTheInputNotTheSecret(t *testing.T) {
	privPath, _, password := keyPair(t)
	for name, c := range map[string]struct {
		ref  string
		env  map[string]string
		want string
	}{
		"wrong password": {privPath, map[string]string{EnvPassword: "nope"}, EnvPassword},
		"missing file":   {filepath.Join(t.TempDir(), "none.key"), nil, "no such file"},
		"empty env":      {"env://DT_NO_SUCH_KEY", nil, "$DT_NO_SUCH_KEY is empty"},
	} {
		_, err := LoadKey(c.ref, func(k string) string { return c.env[k] })
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), password) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

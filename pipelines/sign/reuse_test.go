package sign

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The development key is ECDSA: signing the same payload twice gives two
// signatures, so reuse keeps the earlier run's. A rerun with only the
// run's times changed reuses them (the same artifact digests), after
// verifying them with the key; a tampered entry, other content or another
// key signs again.
func TestSignaturesAreReusedOnlyVerifiedAndForTheSameContent(t *testing.T) {
	key, err := DevKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := key.Signer.SignMessage(strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := key.Signer.SignMessage(strings.NewReader("payload"))
	if bytes.Equal(a, b) {
		t.Fatalf("the key's signatures are deterministic: reuse would not need a cache")
	}
	var progress bytes.Buffer
	o, _ := signInputs(t, key, &progress)
	o.CacheDir = t.TempDir()
	signOnce := func(what string) (*Result, string) {
		t.Helper()
		progress.Reset()
		o.Provenance.Started, o.Provenance.Finished = time.Now(), time.Now().Add(time.Second) // another run
		r, err := Sign(context.Background(), o)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return r, progress.String()
	}
	first, said := signOnce("first")
	if first.Reused != 0 {
		t.Fatalf("first signing reused %d:\n%s", first.Reused, said)
	}
	second, said := signOnce("again")
	if second.Reused != len(o.Images) || strings.Count(said, "attestations reused") != len(o.Images) {
		t.Fatalf("again: want %d reused, got %d:\n%s", len(o.Images), second.Reused, said)
	}
	for i := range first.Images {
		if first.Images[i].SignatureDigest != second.Images[i].SignatureDigest || first.Images[i].AttestationDigest != second.Images[i].AttestationDigest {
			t.Errorf("%s: reused artifacts differ from the first run's", first.Images[i].Service)
		}
	}

	// Tampered: every entry's signature replaced by one over other bytes.
	entries, err := filepath.Glob(filepath.Join(o.CacheDir, "*", "record.json"))
	if err != nil || len(entries) != len(o.Images) {
		t.Fatalf("cache entries: %v %v", entries, err)
	}
	for _, e := range entries {
		raw, err := os.ReadFile(e)
		if err != nil {
			t.Fatal(err)
		}
		var c cachedSignature
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatal(err)
		}
		other, _ := key.Signer.SignMessage(strings.NewReader("something else"))
		c.Signature = base64.StdEncoding.EncodeToString(other)
		raw, _ = json.Marshal(c)
		if err := os.WriteFile(e, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, said := signOnce("tampered")
	if r.Reused != 0 || strings.Count(said, "does not verify with the key") != len(o.Images) {
		t.Errorf("tampered entries: want all signed again, naming the failed verification; %d reused:\n%s", r.Reused, said)
	}
	// The entries were replaced: reused again.
	if r, said = signOnce("after re-signing"); r.Reused != len(o.Images) {
		t.Errorf("after re-signing: %d reused:\n%s", r.Reused, said)
	}

	// Other content (a provenance parameter): signed again.
	o.Provenance.Parameters = map[string]string{"services": "media-handler,meeting-controller", "version": "2"}
	if r, said = signOnce("other parameters"); r.Reused != 0 {
		t.Errorf("other provenance: %d reused:\n%s", r.Reused, said)
	}
	// Another key: signed again.
	if o.Key, err = DevKey(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if r, said = signOnce("another key"); r.Reused != 0 {
		t.Errorf("another key: %d reused:\n%s", r.Reused, said)
	}
}

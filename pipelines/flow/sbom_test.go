package flow

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/sbom"
)

// Two builds of one commit, from two copies of the source in two
// directories into two output directories, write the same SBOM bytes, and
// the attestations made from them differ only in the times of the scan
// and of the build (and in the signatures, which are not compared).
func TestSBOMsAndAttestationsAreIdenticalAcrossCheckouts(t *testing.T) {
	var (
		files     [2]map[string][]byte
		atts      [2]map[string][]byte
		namespace string
	)
	for i := range 2 {
		root := fixtureRepo(t)
		out := filepath.Join(t.TempDir(), "dist")
		m, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: out, Base: build.BaseSkeleton,
			Version: "1.0.0", SourceURL: "https://example.com/darktower/delivery", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys})
		if err != nil {
			t.Fatal(err)
		}
		files[i] = sbomFiles(t, out)
		atts[i] = attestations(t, out, m.Images[0].Digest)
		if i == 1 {
			continue
		}
		var spdx struct {
			Namespace    string `json:"documentNamespace"`
			CreationInfo struct {
				Created string `json:"created"`
			} `json:"creationInfo"`
		}
		var cdx struct {
			Serial   string `json:"serialNumber"`
			Metadata struct {
				Timestamp string `json:"timestamp"`
			} `json:"metadata"`
		}
		p := m.Images[0].Platforms[0].SBOM
		if err := json.Unmarshal(files[0][filepath.Base(p.SPDX)], &spdx); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(files[0][filepath.Base(p.CycloneDX)], &cdx); err != nil {
			t.Fatal(err)
		}
		namespace = spdx.Namespace
		// The commit's time (SOURCE_DATE_EPOCH), not the clock's.
		if spdx.CreationInfo.Created != "2026-01-01T00:00:00Z" || cdx.Metadata.Timestamp != "2026-01-01T00:00:00Z" {
			t.Errorf("created %q, timestamp %q: want SOURCE_DATE_EPOCH, 2026-01-01T00:00:00Z", spdx.CreationInfo.Created, cdx.Metadata.Timestamp)
		}
		if !strings.HasPrefix(spdx.Namespace, "https://example.com/darktower/delivery/sbom/ok_linux_amd64-") {
			t.Errorf("SPDX namespace %s is not under the source URL", spdx.Namespace)
		}
		if !strings.HasPrefix(cdx.Serial, "urn:uuid:") || len(cdx.Serial) != len("urn:uuid:")+36 {
			t.Errorf("CycloneDX serial number %q is not a urn:uuid", cdx.Serial)
		}
	}
	if len(files[0]) != 2 {
		t.Fatalf("dist/sbom holds %d files, want ok's SPDX and CycloneDX", len(files[0]))
	}
	for name, a := range files[0] {
		if b, ok := files[1][name]; !ok {
			t.Errorf("%s: not written by the second build", name)
		} else if !bytes.Equal(a, b) {
			t.Errorf("%s differs between the builds:\n%s", name, firstDifference(a, b))
		}
	}
	if len(atts[0]) != 3 {
		t.Fatalf("%d attestations, want CycloneDX, vuln and SLSA: %v", len(atts[0]), atts[0])
	}
	for predicate, a := range atts[0] {
		if b := atts[1][predicate]; !bytes.Equal(a, b) {
			t.Errorf("%s attestation differs between the builds:\n%s", predicate, firstDifference(a, b))
		}
	}

	// Another image (here: another source URL in its labels) gets other
	// identifiers.
	root := fixtureRepo(t)
	out := filepath.Join(t.TempDir(), "dist")
	if _, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: out, Base: build.BaseSkeleton,
		Version: "1.0.0", SourceURL: "https://example.com/darktower/fork", Env: fixedEnv, VulnDB: testDB, NoSign: true}); err != nil {
		t.Fatal(err)
	}
	other := sbomFiles(t, out)["ok_linux_amd64.spdx.json"]
	if bytes.Contains(other, []byte(namespace)) || !bytes.Contains(other, []byte(`"documentNamespace": "https://example.com/darktower/fork/sbom/ok_linux_amd64-`)) {
		t.Errorf("another image's SPDX document reuses the namespace %s or is not under its source URL", namespace)
	}
}

func sbomFiles(t *testing.T, out string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(out, sbom.Dir))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(out, sbom.Dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = raw
	}
	return files
}

// attestations reads the in-toto statements attached to an image in the
// output's layout, by predicate type, with the times that belong to this
// run (the scan's, the build's) removed.
func attestations(t *testing.T, out, digest string) map[string][]byte {
	t.Helper()
	p, err := layout.FromPath(filepath.Join(out, build.LayoutDir))
	if err != nil {
		t.Fatal(err)
	}
	root, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string][]byte{}
	tag := strings.Replace(digest, ":", "-", 1) + ".att"
	for _, d := range im.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] != tag {
			continue
		}
		img, err := root.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			var env struct {
				Payload string `json:"payload"`
			}
			err = json.NewDecoder(rc).Decode(&env)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			payload, err := base64.StdEncoding.DecodeString(env.Payload)
			if err != nil {
				t.Fatal(err)
			}
			var st struct {
				PredicateType string         `json:"predicateType"`
				Predicate     map[string]any `json:"predicate"`
			}
			if err := json.Unmarshal(payload, &st); err != nil {
				t.Fatal(err)
			}
			switch st.PredicateType {
			case "https://cyclonedx.org/bom":
				found[st.PredicateType] = payload // as signed
				continue
			case "https://cosign.sigstore.dev/attestation/vuln/v1":
				delete(st.Predicate, "metadata") // scanStartedOn, scanFinishedOn
			case "https://slsa.dev/provenance/v1":
				delete(st.Predicate["runDetails"].(map[string]any), "metadata") // startedOn, finishedOn
			}
			if payload, err = json.Marshal(st); err != nil {
				t.Fatal(err)
			}
			found[st.PredicateType] = payload
		}
	}
	return found
}

// firstDifference shows where two documents part.
func firstDifference(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	from := max(0, i-200)
	return "…" + string(a[from:min(len(a), i+200)]) + "\n---\n…" + string(b[from:min(len(b), i+200)])
}

// A second identical build takes every image's SBOMs from the cache; an
// image whose source changed is cataloged again, the others still reused.
func TestUnchangedImagesSBOMsAreReusedNotRecataloged(t *testing.T) {
	root := fixtureRepo(t)
	for name, body := range map[string]string{"images/other.yaml": spec("other", "./cmd/other"),
		"fx/cmd/other/main.go": "package main\n\nfunc main() { println(2) }\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var progress bytes.Buffer
	opts := BuildAllOptions{Root: root, Services: []string{"ok", "other"}, Out: filepath.Join(root, "dist"), Base: build.BaseSkeleton,
		Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, NoSign: true, SBOMCacheDir: t.TempDir(), Progress: &progress}
	buildOnce := func() (map[string]*build.Image, string) {
		t.Helper()
		progress.Reset()
		m, err := BuildAll(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		return byService(m), progress.String()
	}
	reused := func(said string, img *build.Image) bool {
		return strings.Contains(said, "sbom: reused for "+img.Service+" linux/amd64 (digest "+img.Platforms[0].Digest+")")
	}
	first, said := buildOnce()
	if strings.Contains(said, "sbom: reused") || !strings.Contains(said, "sbom: ok linux/amd64: ") {
		t.Fatalf("first build:\n%s", said)
	}
	second, said := buildOnce()
	for _, svc := range []string{"ok", "other"} {
		if !reused(said, second[svc]) || *second[svc].Platforms[0].SBOM != *first[svc].Platforms[0].SBOM {
			t.Errorf("%s unchanged but its SBOM was not reused (%+v, first %+v):\n%s", svc, second[svc].Platforms[0].SBOM, first[svc].Platforms[0].SBOM, said)
		}
	}
	if !strings.Contains(said, "2 reused") {
		t.Errorf("the stage's line does not count the reused pairs:\n%s", said)
	}
	if err := os.WriteFile(filepath.Join(root, "fx", "cmd", "ok", "main.go"), []byte("package main\n\nfunc main() { println(1) }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	third, said := buildOnce()
	if third["ok"].Digest == first["ok"].Digest || reused(said, third["ok"]) || strings.Contains(said, "sbom: reused for ok ") ||
		!strings.Contains(said, "sbom: ok linux/amd64: ") {
		t.Errorf("ok changed (digest %s) but its SBOM was not cataloged again:\n%s", third["ok"].Digest, said)
	}
	if !reused(said, third["other"]) {
		t.Errorf("other unchanged but not reused:\n%s", said)
	}
}

package nodeimage

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The root is written with the overlay applied: replaced files carry the
// overlay's content, deleted ones are absent (with their contents),
// hard links stay links, new files get their missing parents first, and
// /dev's contents are left to the runtime.
func TestWriteRootTarAppliesTheOverlay(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc/systemd/system/multi-user.target.wants"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "dev"), 0o755))
	must(os.WriteFile(filepath.Join(root, "dev/null-ish"), []byte("x"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc/journald.conf"), []byte("[Journal]\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/cron.service"), []byte("unit"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc/a"), []byte("same inode"), 0o644))
	must(os.Link(filepath.Join(root, "etc/a"), filepath.Join(root, "etc/b")))
	must(os.Symlink("/usr/bin/containerd", filepath.Join(root, "etc/link")))

	overlay := tree{}
	overlay.file("etc/journald.conf", 0o644, []byte("[Journal]\nReadKMsg=no\n"))
	overlay.remove("etc/systemd/system/multi-user.target.wants")
	overlay.file("kind/manifests/default-cni.yaml", 0o644, []byte("cni"))
	overlay.link("usr/local/bin/containerd", "/usr/bin/containerd")

	var buf bytes.Buffer
	epoch := time.Unix(0, 0).UTC()
	must(writeRootTar(&buf, root, overlay, epoch))
	got := map[string]*tar.Header{}
	body := map[string]string{}
	var order []string
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(err)
		b, _ := io.ReadAll(tr)
		got[h.Name], body[h.Name] = h, string(b)
		order = append(order, h.Name)
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %s, want the epoch", h.Name, h.ModTime)
		}
	}
	if body["etc/journald.conf"] != "[Journal]\nReadKMsg=no\n" {
		t.Errorf("replaced file: %q", body["etc/journald.conf"])
	}
	for _, gone := range []string{"etc/systemd/system/multi-user.target.wants/", "etc/systemd/system/multi-user.target.wants/cron.service", "dev/null-ish"} {
		if _, ok := got[gone]; ok {
			t.Errorf("%s should not be in the layer", gone)
		}
	}
	if _, ok := got["dev/"]; !ok {
		t.Error("/dev itself should stay (empty)")
	}
	a, b := got["etc/a"], got["etc/b"]
	if a == nil || b == nil || b.Typeflag != tar.TypeLink || b.Linkname != "etc/a" {
		t.Errorf("hard link not kept: %+v %+v", a, b)
	}
	if l := got["etc/link"]; l == nil || l.Typeflag != tar.TypeSymlink || l.Linkname != "/usr/bin/containerd" {
		t.Errorf("symlink: %+v", l)
	}
	joined := strings.Join(order, " ")
	if !strings.Contains(joined, "kind/ kind/manifests/ kind/manifests/default-cni.yaml") {
		t.Errorf("new file's parents not written first: %s", joined)
	}
	if l := got["usr/local/bin/containerd"]; l == nil || l.Linkname != "/usr/bin/containerd" {
		t.Errorf("overlay symlink: %+v", l)
	}
}

// The manifests render with every image named, and a changed manifest,
// version or kind file changes the content key.
func TestManifestsRenderAndTheKeyFollowsInputs(t *testing.T) {
	key := strings.Repeat("ab", 32)
	cni, err := render(cniManifest, key)
	if err != nil || !strings.Contains(string(cni), KubeRouterImage) {
		t.Fatalf("cni: %v\n%s", err, cni)
	}
	storage, err := render(storageManifest, key)
	if err != nil || !strings.Contains(string(storage), LocalPathImage) || !strings.Contains(string(storage), NodeToolsImage(key)) {
		t.Fatalf("storage: %v", err)
	}
	files := map[string][]byte{"etc/containerd/config.toml": []byte("a")}
	k1, _ := contentKey("http://deb.debian.org/debian", files)
	k2, _ := contentKey("http://deb.debian.org/debian", map[string][]byte{"etc/containerd/config.toml": []byte("b")})
	k3, _ := contentKey("http://mirror.example/debian", files)
	if k1 == k2 || k1 == k3 || len(k1) != 64 {
		t.Fatalf("keys %s %s %s", k1, k2, k3)
	}
}

func TestFirstDebianURIReadsBothSourceFormats(t *testing.T) {
	dir := t.TempDir()
	deb822 := filepath.Join(dir, "debian.sources")
	os.WriteFile(deb822, []byte("Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: x\n\nTypes: deb\nURIs: http://mirror.example/debian/\n"), 0o644)
	oneLine := filepath.Join(dir, "sources.list")
	os.WriteFile(oneLine, []byte("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://other.example/debian bookworm main\n"), 0o644)
	if got := firstDebianURI(deb822); got != "http://mirror.example/debian" {
		t.Errorf("deb822: %q", got)
	}
	if got := firstDebianURI(oneLine); got != "http://other.example/debian" {
		t.Errorf("one-line: %q", got)
	}
}

package flow

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/darktower/delivery/pipelines/sign"
)

func TestReleaseRefusesWhatAReleaseMustNotBeBeforeBuilding(t *testing.T) {
	root := fixtureRepo(t)
	out := filepath.Join(root, "dist")
	for name, c := range map[string]struct {
		o    ReleaseOptions
		want []string
	}{
		"no v":                           {ReleaseOptions{Tag: "1.2.3", BuildAllOptions: BuildAllOptions{Push: "r.example/dt"}}, []string{`--tag "1.2.3" is not a release tag`}},
		"short":                          {ReleaseOptions{Tag: "v1.2", BuildAllOptions: BuildAllOptions{Push: "r.example/dt"}}, []string{`--tag "v1.2"`}},
		"build metadata":                 {ReleaseOptions{Tag: "v1.2.3+abc", BuildAllOptions: BuildAllOptions{Push: "r.example/dt"}}, []string{`--tag "v1.2.3+abc"`}},
		"leading zero":                   {ReleaseOptions{Tag: "v01.2.3", BuildAllOptions: BuildAllOptions{Push: "r.example/dt"}}, []string{`--tag "v01.2.3"`}},
		"every problem":                  {ReleaseOptions{Tag: "", BuildAllOptions: BuildAllOptions{NoSign: true, Version: "9.9.9"}}, []string{"not a release tag", "--push is required", "--no-sign", `--version "9.9.9" differs`}},
		"every problem, development key": {ReleaseOptions{Tag: "1", BuildAllOptions: BuildAllOptions{Version: "9.9.9"}}, []string{"not a release tag", "--push is required", `--version "9.9.9" differs`, "development key"}},
		"development key":                {ReleaseOptions{Tag: "v1.2.3", BuildAllOptions: BuildAllOptions{Push: "127.0.0.1:1/dt"}}, []string{"development key", "--key FILE or env://NAME", "id-token: write"}},
		"test build":                     {ReleaseOptions{Tag: "v1.2.3", BuildAllOptions: BuildAllOptions{Push: "r.example/dt", Key: "k.key", GoTags: []string{"chaosfragile"}}}, []string{"--go-tags chaosfragile makes a test build", "never published or released"}},
		"test build, both knobs":         {ReleaseOptions{Tag: "v1.2.3", BuildAllOptions: BuildAllOptions{Push: "r.example/dt", Key: "k.key", GoTags: []string{"chaosfragile", "canaryfault"}}}, []string{"--go-tags chaosfragile,canaryfault makes a test build", "never published or released"}},
		"bad tag":                        {ReleaseOptions{Tag: "v1.2.3", BuildAllOptions: BuildAllOptions{Push: "r.example/dt", Key: "k.key", GoTags: []string{"-x y"}}}, []string{`--go-tags: "-x y" is not a Go build tag`}},
	} {
		o := c.o
		o.Root, o.Out, o.Services, o.Base, o.Env, o.VulnDB, o.DevKeyDir = root, out, []string{"ok"}, build.BaseSkeleton, fixedEnv, testDB, testDevKeys
		_, err := Release(context.Background(), o)
		if err == nil {
			t.Errorf("%s: released, want a refusal", name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", name, err, w)
			}
		}
		if _, err := os.Stat(filepath.Join(out, build.LayoutDir)); err == nil {
			t.Fatalf("%s: an OCI layout was written before the refusal", name)
		}
	}
	for _, ok := range []string{"v0.1.0", "v1.20.3", "v2.0.0-rc.1", "v1.0.0-alpha-2.x"} {
		if err := checkRelease(ReleaseOptions{Tag: ok, BuildAllOptions: BuildAllOptions{Push: "r.example/dt"}}); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestReleasePublishesSignedImagesStampedWithTheTag(t *testing.T) {
	root := fixtureRepo(t)
	if _, err := sign.DevKey(testDevKeys); err != nil {
		t.Fatal(err)
	}
	// A key given with --key is the releaser's choice, whatever made it.
	keyFile := filepath.Join(testDevKeys, "cosign.key")
	repo := testreg.InProcess(t) + "/darktower"
	m, err := Release(context.Background(), ReleaseOptions{Tag: "v1.4.0", BuildAllOptions: BuildAllOptions{Root: root, Services: []string{"ok"},
		Out: filepath.Join(root, "dist"), Base: build.BaseSkeleton, Push: repo, Key: keyFile, Env: fixedEnv, VulnDB: testDB, DevKeyDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	img := m.Images[0]
	if m.Version != "v1.4.0" || img.Tag != "ok:v1.4.0" {
		t.Errorf("version %q, tag %q: want v1.4.0 and ok:v1.4.0", m.Version, img.Tag)
	}
	if want := repo + "/ok:v1.4.0@" + img.Digest; img.Pushed != want {
		t.Errorf("pushed %q, want %q", img.Pushed, want)
	}
	if img.Signature == nil || img.Signature.Development || img.Signature.Key != keyFile {
		t.Errorf("signature %+v: want signed with %s, not as a development key", img.Signature, keyFile)
	}
	pub, err := os.ReadFile(filepath.Join(testDevKeys, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sign.Verify(context.Background(), sign.VerifyOptions{Image: img.Pushed, PublicKey: pub}); err != nil {
		t.Fatalf("the released image does not verify: %v", err)
	}
}

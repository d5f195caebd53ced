package flow

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/internal/sigstoretest"
	"github.com/darktower/delivery/pipelines/internal/testreg"
	"github.com/darktower/delivery/pipelines/sign"
)

// lockedBuffer is a progress writer the Fulcio server writes to as well.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// build-all --push in GitHub Actions (the job's OIDC token endpoint in
// its environment, no --key) signs keyless, not with the development key,
// and asks Fulcio for its 10-minute certificate after compiling and
// scanning, right before signing. Rekor cannot be reached here (it
// refuses): nothing is pushed.
func TestPushSignsKeylessWithACertificateTakenRightBeforeSigning(t *testing.T) {
	root := fixtureRepo(t)
	token := sigstoretest.FakeJWT(map[string]string{"sub": sigstoretest.TokenSubject, "iss": sigstoretest.ActionsIssuer})
	sigstoretest.ActionsTokenServer(t, token)
	var progress lockedBuffer
	fulcio := sigstoretest.Fulcio(t, sigstoretest.NewCA(t), token, func() { progress.Write([]byte("FULCIO: certificate issued\n")) })
	host := testreg.InProcess(t)
	out := filepath.Join(root, "dist")
	_, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Services: []string{"ok"}, Out: out,
		Base: build.BaseSkeleton, Version: "1.0.0", Env: fixedEnv, VulnDB: testDB, DevKeyDir: t.TempDir(), Push: host + "/darktower", StageCacheDir: t.TempDir(),
		Keyless: sign.KeylessOptions{FulcioURL: fulcio, RekorURL: sigstoretest.RefusingRekor(t)}, Progress: &progress})
	if err == nil || !strings.Contains(err.Error(), "Rekor") {
		t.Fatalf("want the signing to fail closed at Rekor, got %v\n%s", err, progress.String())
	}
	p := progress.String()
	built, scanned, issued := strings.Index(p, " compiled "), strings.Index(p, "scan: passed"), strings.Index(p, "FULCIO: certificate issued")
	if built < 0 || scanned < 0 || issued < 0 || issued < built || issued < scanned {
		t.Fatalf("the certificate must be obtained after the build and the scan (build at %d, scan at %d, Fulcio at %d):\n%s", built, scanned, issued, p)
	}
	if !strings.Contains(p, "sign: keyless: no signature is reused across runs") {
		t.Errorf("keyless signing does not say that nothing is reused:\n%s", p)
	}
	if strings.Count(p, "FULCIO: certificate issued") != 1 || strings.Contains(p, "DEVELOPMENT key") {
		t.Errorf("want one keyless certificate and no development key:\n%s", p)
	}
	if _, err := os.Stat(filepath.Join(out, build.ManifestFile)); !os.IsNotExist(err) {
		t.Errorf("a build that was not signed left manifest.json: %v", err)
	}
}

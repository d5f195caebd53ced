package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// adrTree is ADR-0012's "Directory Structure", path by path, plus the
// environment overlays. Each file must exist with content; each directory
// must hold files.
var adrTree = []string{
	"base/namespace.yaml", "base/service-account.yaml", "base/network-policy-default-deny.yaml", "base/kustomization.yaml",
	"services/ac-service/statefulset.yaml", "services/ac-service/service.yaml", "services/ac-service/hpa.yaml",
	"services/ac-service/pdb.yaml", "services/ac-service/network-policy.yaml", "services/ac-service/service-monitor.yaml",
	"services/global-controller/", "services/meeting-controller/", "services/media-handler/",
	"platform/linkerd/", "platform/external-secrets/", "platform/observability/", "platform/database/", "platform/chaos/", "platform/security/", "platform/feature-flags/",
	"terraform/modules/kubernetes-cluster/", "terraform/modules/node-pool/", "terraform/modules/secrets-backend/",
	"terraform/environments/dev/", "terraform/environments/staging/", "terraform/environments/prod/",
	"local/kind-config.yaml", "local/docker-compose.yml", "local/setup.sh", "local/teardown.sh", "local/restart.sh", "local/status.sh", "local/README.md",
	"ci/image-scan.yaml", "ci/deploy-canary.yaml", "ci/chaos-tests.yaml",
	"overlays/local/", "overlays/preview/", "overlays/staging/", "overlays/prod/",
}

func TestADRDirectoryStructureExists(t *testing.T) {
	for _, p := range adrTree {
		full := filepath.Join(infraDir, p)
		if strings.HasSuffix(p, "/") {
			entries, err := os.ReadDir(full)
			if err != nil || len(entries) == 0 {
				t.Errorf("%s: missing or empty (%v)", p, err)
			}
			continue
		}
		info, err := os.Stat(full)
		if err != nil || info.Size() < 100 {
			t.Errorf("%s: missing or a placeholder (%v)", p, err)
		}
	}
	for _, svc := range []string{"global-controller", "meeting-controller", "media-handler"} {
		for _, f := range []string{"deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "network-policy.yaml", "service-monitor.yaml"} {
			if _, err := os.Stat(filepath.Join(infraDir, "services", svc, f)); err != nil {
				t.Errorf("services/%s/%s: %v", svc, f, err)
			}
		}
	}
	for _, s := range []string{"setup.sh", "teardown.sh", "restart.sh", "status.sh"} {
		if info, err := os.Stat(filepath.Join(infraDir, "local", s)); err == nil && info.Mode()&0o111 == 0 {
			t.Errorf("local/%s is not executable", s)
		}
	}
}

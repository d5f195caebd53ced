package sim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/darktower/delivery/pipelines/upstream"
)

// CRDSource is a published set of CustomResourceDefinitions: files inside a
// Go module, fetched through the Go module proxy at a pinned version.
type CRDSource struct {
	Module, Version string
	Files           []string // paths inside the module
}

// PlatformCRDs are the platform's CRDs the simulated cluster installs, for
// the objects infra/ renders. CloudNativePG's and LitmusChaos's modules are
// not served by the module proxy here, so their kinds cannot be validated
// server-side (validate reports them unchecked; policy/ checks them
// structurally). infra/ uses none of Linkerd's custom kinds.
var PlatformCRDs = []CRDSource{
	{"github.com/prometheus-operator/prometheus-operator", "v0.85.0", []string{
		"example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
		"example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
		"example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml"}},
	{"github.com/fluxcd/flagger", "v1.36.1", []string{"artifacts/flagger/crd.yaml"}}, // Canary, MetricTemplate, AlertProvider
	{"github.com/external-secrets/external-secrets", "v0.16.2", []string{
		"config/crds/bases/external-secrets.io_externalsecrets.yaml",
		"config/crds/bases/external-secrets.io_clustersecretstores.yaml",
		"config/crds/bases/external-secrets.io_secretstores.yaml"}},
	{"github.com/cert-manager/cert-manager", "v1.21.2", []string{
		"deploy/crds/cert-manager.io_certificates.yaml",
		"deploy/crds/cert-manager.io_issuers.yaml",
		"deploy/crds/cert-manager.io_clusterissuers.yaml",
		"deploy/crds/cert-manager.io_certificaterequests.yaml"}},
}

// LoadCRDs fetches the sources and returns their YAML documents, one CRD
// each.
func LoadCRDs(ctx context.Context, cacheDir string, sources []CRDSource) ([][]byte, error) {
	work := filepath.Join(cacheDir, "src", "crds")
	if err := upstream.ThrowawayModule(work, map[string]string{"go.mod": "module darktower.local/sim-crds\n\ngo 1.24.0\n"}); err != nil {
		return nil, err
	}
	var docs [][]byte
	for _, src := range sources {
		info, err := upstream.Download(ctx, work, src.Module+"@"+src.Version)
		if err != nil {
			return nil, err
		}
		for _, f := range src.Files {
			raw, err := os.ReadFile(filepath.Join(info.Dir, f))
			if err != nil {
				return nil, fmt.Errorf("%s@%s: %w", src.Module, src.Version, err)
			}
			for _, d := range strings.Split("\n"+string(raw), "\n---") {
				if strings.Contains(d, "kind: CustomResourceDefinition") {
					docs = append(docs, []byte(d))
				}
			}
		}
	}
	return docs, nil
}

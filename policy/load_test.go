package policy

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The chaos stage's load (darktower-smoke with component load) is
// reachable by Prometheus on its metrics port and by nothing else; the
// smoke check's pod (no component label) by nothing at all.
func TestPreviewLoadIsScrapedOnlyByPrometheus(t *testing.T) {
	for _, overlay := range SmokeOverlays {
		n, ns := network(t, "../infra/"+overlay)
		services, others, outside := probePeers(t, ns)
		sources := append(append(append([]Peer{}, services...), others...), outside)
		load := Peer{Name: "darktower-load", Namespace: ns, IP: netip.MustParseAddr("10.244.1.31"),
			Labels: map[string]string{"app.kubernetes.io/name": "darktower-smoke", "app.kubernetes.io/component": "load"}}
		var smoke Peer
		for _, o := range others {
			if o.Name == "darktower-smoke" {
				smoke = o
			}
		}
		for _, dst := range []Peer{load, smoke} {
			for _, port := range probePorts {
				var got []string
				for _, src := range sources {
					ok, err := n.Allows(src, dst, port)
					if err != nil {
						t.Fatal(err)
					}
					if ok {
						got = append(got, src.Name)
					}
				}
				var want []string
				if dst.Name == "darktower-load" && port == (Port{corev1.ProtocolTCP, 8080}) {
					want = []string{"prometheus"}
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s: %s %s is reachable from %v, want %v", overlay, dst.Name, port, got, want)
				}
			}
		}
	}
}

package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/reachability-*.json from the rendered NetworkPolicies")

// ReachabilityMatrix is the computed matrix the real-cluster test
// (pipelines/kindcluster) measures with probe pods: who reaches whom on
// which port, over peers that can be stood up in a kind cluster — the
// four services with their rendered pod labels, the data stores,
// Prometheus and a stranger pod.
type ReachabilityMatrix struct {
	Overlays []string            `json:"overlays"` // rendered together: the services' and the data namespace's policies
	Peers    []MatrixPeer        `json:"peers"`
	Ports    []string            `json:"ports"`   // "TCP/443"
	Allowed  []string            `json:"allowed"` // "from -> to TCP/443", sorted
	Services map[string][]string `json:"-"`
}

// MatrixPeer is a pod of the matrix.
type MatrixPeer struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

var matrixPorts = []Port{
	{corev1.ProtocolTCP, 443}, {corev1.ProtocolUDP, 443}, {corev1.ProtocolTCP, 8080}, {corev1.ProtocolTCP, 8443},
	{corev1.ProtocolTCP, 5432}, {corev1.ProtocolTCP, 6379},
}

func computeMatrix(t *testing.T, overlay string) ReachabilityMatrix {
	n, ns := network(t, "../infra/"+overlay)
	r := decoded(t, overlay)
	var peers []Peer
	for i, w := range r.Workloads() {
		peers = append(peers, Peer{Name: w.Name, Namespace: ns, Labels: w.Template.Labels,
			IP: netip.AddrFrom4([4]byte{10, 244, 1, byte(10 + i)})})
	}
	_, others, _ := probePeers(t, ns)
	for _, o := range others {
		switch o.Name {
		case "postgresql", "redis", "prometheus", "stranger":
			peers = append(peers, o)
		}
	}
	m := ReachabilityMatrix{Overlays: []string{overlay, "platform/database"}}
	for _, p := range matrixPorts {
		m.Ports = append(m.Ports, p.String())
	}
	for _, p := range peers {
		m.Peers = append(m.Peers, MatrixPeer{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels})
	}
	for _, from := range peers {
		for _, to := range peers {
			// Prometheus and the stranger run no policies of ours: they are
			// sources only.
			if from.Name == to.Name || to.Name == "prometheus" || to.Name == "stranger" {
				continue
			}
			for _, port := range matrixPorts {
				ok, err := n.Allows(from, to, port)
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					m.Allowed = append(m.Allowed, fmt.Sprintf("%s -> %s %s", from.Name, to.Name, port))
				}
			}
		}
	}
	slices.Sort(m.Allowed)
	return m
}

// The matrix the real cluster must measure is kept as a golden file next
// to the policies it comes from: a change to a NetworkPolicy fails here
// until the golden file is regenerated (go test -run TestReachabilityMatrix
// -update-golden), so the real-cluster test always measures against the
// policies as they are.
func TestReachabilityMatrixIsCurrent(t *testing.T) {
	m := computeMatrix(t, "overlays/preview")
	if len(m.Allowed) == 0 || len(m.Peers) != 8 {
		t.Fatalf("computed matrix is implausible: %d peers, %d allowed flows", len(m.Peers), len(m.Allowed))
	}
	path := filepath.Join("testdata", "reachability-preview.json")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		t.Fatal(err)
	}
	want := buf.Bytes()
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it: go test -run TestReachabilityMatrixIsCurrent -update-golden)", err)
	}
	if string(got) != string(want) {
		var old ReachabilityMatrix
		json.Unmarshal(got, &old)
		extra, missing := Diff(m.Allowed, old.Allowed)
		t.Fatalf("%s is stale (regenerate: go test -run TestReachabilityMatrixIsCurrent -update-golden); now allowed and not in the file: %v; in the file and no longer allowed: %v", path, extra, missing)
	}
	// Sanity: the ADR's rows are in it, and a stranger reaches only what is open to anyone.
	for _, flow := range []string{"global-controller -> ac-service TCP/443", "ac-service -> postgresql TCP/5432", "meeting-controller -> redis TCP/6379"} {
		if !slices.Contains(m.Allowed, flow) {
			t.Errorf("matrix lacks the ADR's %s", flow)
		}
	}
	for _, flow := range []string{"stranger -> ac-service TCP/443", "stranger -> postgresql TCP/5432", "stranger -> global-controller TCP/8080", "media-handler -> redis TCP/6379"} {
		if slices.Contains(m.Allowed, flow) {
			t.Errorf("matrix allows %s", flow)
		}
	}
}

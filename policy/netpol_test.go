package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// probePeers are the parties the matrix is computed over: the four
// services in ns (with their pods' identifying labels as rendered), the
// platform's pods, a stranger pod, and the outside.
func probePeers(t *testing.T, ns string) (services, others []Peer, outside Peer) {
	t.Helper()
	podLabels := map[string]map[string]string{}
	for _, w := range decoded(t, "overlays/prod").Workloads() {
		podLabels[w.Name] = map[string]string{}
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of"} {
			podLabels[w.Name][k] = w.Template.Labels[k]
		}
	}
	for i, s := range Services {
		services = append(services, Peer{Name: s, Namespace: ns, Labels: podLabels[s],
			IP: netip.AddrFrom4([4]byte{10, 244, 1, byte(10 + i)})})
	}
	others = []Peer{
		{Name: "postgresql", Namespace: "dark-tower-data", Labels: map[string]string{"cnpg.io/poolerName": "dark-tower-pg-pooler-rw", "cnpg.io/podRole": "pooler"}, IP: netip.MustParseAddr("10.244.2.10")},
		{Name: "postgresql-instance", Namespace: "dark-tower-data", Labels: map[string]string{"cnpg.io/cluster": "dark-tower-pg", "cnpg.io/podRole": "instance"}, IP: netip.MustParseAddr("10.244.2.11")},
		{Name: "redis", Namespace: "dark-tower-data", Labels: map[string]string{"app.kubernetes.io/name": "redis-cluster"}, IP: netip.MustParseAddr("10.244.2.12")},
		{Name: "prometheus", Namespace: "monitoring", Labels: map[string]string{"app.kubernetes.io/name": "prometheus"}, IP: netip.MustParseAddr("10.244.3.10")},
		{Name: "kube-dns", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}, IP: netip.MustParseAddr("10.244.0.10")},
		{Name: "linkerd", Namespace: "linkerd", Labels: map[string]string{"linkerd.io/control-plane-component": "destination"}, IP: netip.MustParseAddr("10.244.0.20")},
		{Name: "darktower-smoke", Namespace: ns, Labels: map[string]string{"app.kubernetes.io/name": "darktower-smoke"}, IP: netip.MustParseAddr("10.244.1.30")},
		// The Litmus experiment pod (it runs the probes) and the other chaos
		// pods (runner, helpers), in the chaos namespace.
		{Name: "chaos-probe", Namespace: ChaosNamespace, Labels: map[string]string{"app.kubernetes.io/component": "experiment-job", "app.kubernetes.io/part-of": "litmus", "name": "pod-delete"}, IP: netip.MustParseAddr("10.244.5.10")},
		{Name: "chaos-runner", Namespace: ChaosNamespace, Labels: map[string]string{"app.kubernetes.io/component": "chaos-runner", "app.kubernetes.io/part-of": "litmus"}, IP: netip.MustParseAddr("10.244.5.11")},
		{Name: "stranger", Namespace: "default", Labels: map[string]string{"app": "stranger"}, IP: netip.MustParseAddr("10.244.4.10")},
	}
	// The flag system's pods (their labels as rendered) and a stranger in
	// its namespace.
	for i, w := range decoded(t, FlagsComponent).Workloads() {
		others = append(others, Peer{Name: w.Name, Namespace: FlagsNamespace, Labels: w.Template.Labels,
			IP: netip.AddrFrom4([4]byte{10, 244, 6, byte(10 + i)})})
	}
	others = append(others, Peer{Name: "flags-stranger", Namespace: FlagsNamespace, Labels: map[string]string{"app": "stranger"}, IP: netip.MustParseAddr("10.244.6.30")})
	outside = Peer{Name: "outside", IP: netip.MustParseAddr("203.0.113.7")}
	return services, others, outside
}

var probePorts = []Port{
	{corev1.ProtocolTCP, 443}, {corev1.ProtocolUDP, 443}, {corev1.ProtocolTCP, 8080}, {corev1.ProtocolTCP, 8443},
	{corev1.ProtocolTCP, 5432}, {corev1.ProtocolTCP, 6379}, {corev1.ProtocolUDP, 53}, {corev1.ProtocolTCP, 53},
	{corev1.ProtocolTCP, 8086}, {corev1.ProtocolTCP, 8090}, {corev1.ProtocolTCP, 22}, {corev1.ProtocolTCP, 16379},
	{corev1.ProtocolTCP, 9090}, {corev1.ProtocolTCP, EtcdClientPort}, {corev1.ProtocolTCP, EtcdPeerPort}, {corev1.ProtocolTCP, EtcdMetricsPort},
}

func flows(allows ...[]Allow) []string {
	var out []string
	for _, list := range allows {
		for _, a := range list {
			out = append(out, a.Flow)
		}
	}
	slices.Sort(out)
	return out
}

// network gathers the NetworkPolicies of an overlay and of the data
// namespace, with the namespaces' labels as rendered.
func network(t *testing.T, overlay string) (*Network, string) {
	t.Helper()
	n := &Network{Namespaces: map[string]map[string]string{}}
	ns := ""
	for _, dir := range []string{overlay, "platform/database"} {
		r := decoded(t, dir)
		n.Policies = append(n.Policies, All[*networkingv1.NetworkPolicy](r)...)
		for _, o := range All[*corev1.Namespace](r) {
			n.Namespaces[o.Name] = o.Labels
			if dir == overlay {
				ns = o.Name
			}
		}
	}
	return n, ns
}

// checkMatrix compares each service's computed allow lists with the ADR's
// (and, for the overlays that have them, the preview smoke check's and the
// chaos probes' additions).
func checkMatrix(t *testing.T, n *Network, ns string, overlay string) []string {
	t.Helper()
	services, others, outside := probePeers(t, ns)
	peers := append(append(append([]Peer{}, services...), others...), outside)
	var problems []string
	for _, self := range services {
		for _, dir := range []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress} {
			got, err := n.Allowed(self, dir, peers, probePorts, outside)
			if err != nil {
				return []string{err.Error()}
			}
			in := [][]Allow{NetworkIngress[self.Name]}
			if slices.Contains(SmokeOverlays, overlay) {
				in = append(in, SmokeIngress[self.Name])
			}
			if slices.Contains(ChaosOverlays, overlay) {
				in = append(in, ChaosIngress[self.Name])
			}
			want := flows(in...)
			if dir == networkingv1.PolicyTypeEgress {
				want = flows(NetworkEgress[self.Name], EveryPodEgress)
			}
			extra, missing := Diff(got, want)
			if len(extra) > 0 {
				problems = append(problems, self.Name+" "+string(dir)+" allows more than the ADR: "+FormatFlows(extra))
			}
			if len(missing) > 0 {
				problems = append(problems, self.Name+" "+string(dir)+" lacks the ADR's: "+FormatFlows(missing))
			}
		}
	}
	return problems
}

func TestNetworkPoliciesAreExactlyTheADRTable(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			n, ns := network(t, "../infra/"+overlay)
			if ns == "" || len(n.Policies) == 0 {
				t.Fatalf("no namespace or policies rendered")
			}
			for _, p := range checkMatrix(t, n, ns, overlay) {
				t.Error(p)
			}
		})
	}
}

func TestDataStoresAreReachableOnlyByTheirClients(t *testing.T) {
	n, ns := network(t, "../infra/overlays/prod")
	services, others, outside := probePeers(t, ns)
	sources := append(append(append([]Peer{}, services...), others...), outside)
	for _, target := range []struct {
		peer    string
		port    Port
		clients []string
	}{
		{"postgresql", Port{corev1.ProtocolTCP, 5432}, PostgresClients},
		{"postgresql-instance", Port{corev1.ProtocolTCP, 5432}, []string{"postgresql", "postgresql-instance"}}, // the pooler and the replicas
		{"redis", Port{corev1.ProtocolTCP, 6379}, append([]string{"redis"}, RedisClients...)},                  // and the other cluster nodes
	} {
		var dst Peer
		for _, o := range others {
			if o.Name == target.peer {
				dst = o
			}
		}
		var got []string
		for _, src := range sources {
			ok, err := n.Allows(src, dst, target.port)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				got = append(got, src.Name)
			}
		}
		want := append([]string{}, target.clients...)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s %s is reachable from %v, want exactly %v", target.peer, target.port, got, want)
		}
	}
}

// The matrix check must catch a single extra or missing allow.
func TestMatrixCatchesOneExtraOrMissingAllow(t *testing.T) {
	n, ns := network(t, "../infra/overlays/prod")
	if p := checkMatrix(t, n, ns, "overlays/prod"); len(p) != 0 {
		t.Fatalf("baseline has problems: %v", p)
	}
	var cur *Network // the copy being mutated
	find := func(name string) int {
		for i, p := range cur.Policies {
			if p.Name == name && p.Namespace == ns {
				return i
			}
		}
		t.Fatalf("no policy %s", name)
		return -1
	}
	udp := corev1.ProtocolUDP
	for name, mutate := range map[string]func(*Network){
		"AC loses GC's ingress": func(n *Network) {
			p := n.Policies[find("ac-service")]
			p.Spec.Ingress[0].From = p.Spec.Ingress[0].From[1:]
		},
		"MC gains egress to PostgreSQL": func(n *Network) {
			p := n.Policies[find("meeting-controller")]
			p.Spec.Egress = append(p.Spec.Egress, *n.Policies[find("ac-service")].Spec.Egress[0].DeepCopy())
		},
		"GC loses HTTP/3": func(n *Network) {
			p := n.Policies[find("global-controller")]
			p.Spec.Ingress[0].Ports = p.Spec.Ingress[0].Ports[:1]
		},
		"MH media opens to all UDP ports": func(n *Network) {
			p := n.Policies[find("media-handler")]
			p.Spec.Ingress[1].Ports = []networkingv1.NetworkPolicyPort{{Protocol: &udp}}
		},
		"default deny removed": func(n *Network) {
			i := find("default-deny")
			n.Policies = append(n.Policies[:i:i], n.Policies[i+1:]...)
			// The services' own policies still select them; drop AC's too.
			j := find("ac-service")
			n.Policies = append(n.Policies[:j:j], n.Policies[j+1:]...)
		},
	} {
		copyN := &Network{Namespaces: n.Namespaces}
		for _, p := range n.Policies {
			copyN.Policies = append(copyN.Policies, p.DeepCopy())
		}
		cur = copyN
		mutate(copyN)
		if p := checkMatrix(t, copyN, ns, "overlays/prod"); len(p) == 0 {
			t.Errorf("%s: the matrix check did not notice", name)
		} else {
			t.Logf("%s: caught: %s", name, strings.Join(p, "; "))
		}
	}
}

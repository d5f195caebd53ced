package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Peer is a party traffic can come from or go to: a pod (namespace and
// labels) or, with no namespace, an address outside the cluster.
type Peer struct {
	Name      string // how the matrix names it
	Namespace string // "" outside the cluster
	Labels    map[string]string
	IP        netip.Addr
}

// Port is a protocol and port number.
type Port struct {
	Protocol corev1.Protocol
	Number   int32
}

func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Protocol, p.Number) }

// Network is the NetworkPolicies in force and the namespaces' labels.
type Network struct {
	Policies   []*networkingv1.NetworkPolicy
	Namespaces map[string]map[string]string // name → labels (kubernetes.io/metadata.name is implied)
}

func (n *Network) nsLabels(ns string) labels.Set {
	l := labels.Set{"kubernetes.io/metadata.name": ns}
	for k, v := range n.Namespaces[ns] {
		l[k] = v
	}
	return l
}

// Allows reports whether a connection from → to on port is allowed:
// from's namespace must let it out and to's namespace must let it in,
// each side deny-by-default once any policy of that direction selects
// the pod (the NetworkPolicy semantics).
func (n *Network) Allows(from, to Peer, port Port) (bool, error) {
	out, err := n.side(from, to, port, networkingv1.PolicyTypeEgress)
	if err != nil || !out {
		return false, err
	}
	return n.side(to, from, port, networkingv1.PolicyTypeIngress)
}

// side evaluates the policies selecting self for one direction.
func (n *Network) side(self, other Peer, port Port, dir networkingv1.PolicyType) (bool, error) {
	if self.Namespace == "" {
		return true, nil // outside the cluster: no NetworkPolicy applies
	}
	selected := false
	for _, p := range n.Policies {
		if p.Namespace != self.Namespace || !hasType(p, dir) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
		if err != nil {
			return false, fmt.Errorf("NetworkPolicy %s/%s: %w", p.Namespace, p.Name, err)
		}
		if !sel.Matches(labels.Set(self.Labels)) {
			continue
		}
		selected = true
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range p.Spec.Ingress {
				ok, err := n.ruleAllows(p, r.From, r.Ports, other, port)
				if err != nil || ok {
					return ok, err
				}
			}
		} else {
			for _, r := range p.Spec.Egress {
				ok, err := n.ruleAllows(p, r.To, r.Ports, other, port)
				if err != nil || ok {
					return ok, err
				}
			}
		}
	}
	return !selected, nil
}

func hasType(p *networkingv1.NetworkPolicy, dir networkingv1.PolicyType) bool {
	if len(p.Spec.PolicyTypes) == 0 { // the API's default: Ingress, plus Egress when egress rules exist
		return dir == networkingv1.PolicyTypeIngress || len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		if t == dir {
			return true
		}
	}
	return false
}

func (n *Network) ruleAllows(p *networkingv1.NetworkPolicy, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, other Peer, port Port) (bool, error) {
	portOK := len(ports) == 0
	for _, pp := range ports {
		proto := corev1.ProtocolTCP
		if pp.Protocol != nil {
			proto = *pp.Protocol
		}
		if proto != port.Protocol {
			continue
		}
		if pp.Port == nil {
			portOK = true
			break
		}
		if pp.Port.Type != 0 { // intstr.String
			return false, fmt.Errorf("NetworkPolicy %s/%s: named port %q: use numbers, so the policy can be checked without the pods", p.Namespace, p.Name, pp.Port.StrVal)
		}
		lo, hi := pp.Port.IntVal, pp.Port.IntVal
		if pp.EndPort != nil {
			hi = *pp.EndPort
		}
		if port.Number >= lo && port.Number <= hi {
			portOK = true
			break
		}
	}
	if !portOK {
		return false, nil
	}
	if len(peers) == 0 {
		return true, nil // no peers listed: everyone
	}
	for _, peer := range peers {
		ok, err := n.peerMatches(p, peer, other)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func (n *Network) peerMatches(p *networkingv1.NetworkPolicy, peer networkingv1.NetworkPolicyPeer, other Peer) (bool, error) {
	if peer.IPBlock != nil {
		prefix, err := netip.ParsePrefix(peer.IPBlock.CIDR)
		if err != nil {
			return false, fmt.Errorf("NetworkPolicy %s/%s: %w", p.Namespace, p.Name, err)
		}
		if !prefix.Contains(other.IP) {
			return false, nil
		}
		for _, e := range peer.IPBlock.Except {
			ex, err := netip.ParsePrefix(e)
			if err != nil {
				return false, err
			}
			if ex.Contains(other.IP) {
				return false, nil
			}
		}
		return true, nil
	}
	if other.Namespace == "" {
		return false, nil // pod and namespace selectors match only pods
	}
	if peer.NamespaceSelector != nil {
		nsSel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			return false, err
		}
		if !nsSel.Matches(n.nsLabels(other.Namespace)) {
			return false, nil
		}
	} else if other.Namespace != p.Namespace {
		return false, nil // a bare podSelector means the policy's own namespace
	}
	if peer.PodSelector == nil {
		return true, nil
	}
	podSel, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
	if err != nil {
		return false, err
	}
	return podSel.Matches(labels.Set(other.Labels)), nil
}

// Any is how a side's table names "everyone": a rule that lets the
// outside address in (or out) on a port covers every peer on that port.
const Any = "any"

// Allowed lists, for one pod, every "peer proto/port" its own policies let
// in (ingress) or out (egress), over the given peers and ports. When the
// outside peer is allowed on a port, that port's entries collapse to
// "any proto/port".
func (n *Network) Allowed(self Peer, dir networkingv1.PolicyType, peers []Peer, ports []Port, outside Peer) ([]string, error) {
	set := map[string]bool{}
	for _, port := range ports {
		open, err := n.side(self, outside, port, dir)
		if err != nil {
			return nil, err
		}
		if open {
			set[Any+" "+port.String()] = true
			continue
		}
		for _, other := range peers {
			ok, err := n.side(self, other, port, dir)
			if err != nil {
				return nil, err
			}
			if ok {
				set[other.Name+" "+port.String()] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// Diff names what got has that want lacks (extra) and the reverse (missing).
func Diff(got, want []string) (extra, missing []string) {
	g, w := map[string]bool{}, map[string]bool{}
	for _, s := range got {
		g[s] = true
	}
	for _, s := range want {
		w[s] = true
	}
	for _, s := range got {
		if !w[s] {
			extra = append(extra, s)
		}
	}
	for _, s := range want {
		if !g[s] {
			missing = append(missing, s)
		}
	}
	return extra, missing
}

// FormatFlows is a stable one-line form for messages.
func FormatFlows(flows []string) string { return strings.Join(flows, ", ") }

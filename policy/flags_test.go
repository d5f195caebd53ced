package policy

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The flag system (infra/platform/feature-flags, ADR-0012 §10): etcd and
// the flag gateway, held to the rules the services' manifests follow and
// to its own table of additions (policy/adr.go).

// flagSystem is the component, decoded, with its parts found.
type flagSystem struct {
	r        *Rendered
	ns       *corev1.Namespace
	gateway  *appsv1.Deployment
	etcd     *appsv1.StatefulSet
	services map[string]*corev1.Service
	pdbs     []*policyv1.PodDisruptionBudget
	monitors []*monitoringv1.ServiceMonitor
	certs    map[string]*certmanagerv1.Certificate // by secretName
	config   map[string]string                     // the gateway's ConfigMap data, by ConfigMap name + "/" + key
}

func loadFlagSystem(t *testing.T) *flagSystem {
	t.Helper()
	f := &flagSystem{r: decoded(t, FlagsComponent), services: map[string]*corev1.Service{},
		certs: map[string]*certmanagerv1.Certificate{}, config: map[string]string{}}
	for _, ns := range All[*corev1.Namespace](f.r) {
		f.ns = ns
	}
	for _, d := range All[*appsv1.Deployment](f.r) {
		if d.Name == FlagGateway {
			f.gateway = d
		}
	}
	for _, s := range All[*appsv1.StatefulSet](f.r) {
		if s.Name == FlagStore {
			f.etcd = s
		}
	}
	for _, s := range All[*corev1.Service](f.r) {
		f.services[s.Name] = s
	}
	for _, c := range All[*certmanagerv1.Certificate](f.r) {
		f.certs[c.Spec.SecretName] = c
	}
	for _, cm := range All[*corev1.ConfigMap](f.r) {
		for k, v := range cm.Data {
			f.config[cm.Name+"/"+k] = v
		}
	}
	f.pdbs = All[*policyv1.PodDisruptionBudget](f.r)
	f.monitors = All[*monitoringv1.ServiceMonitor](f.r)
	if f.ns == nil || f.gateway == nil || f.etcd == nil {
		t.Fatalf("%s must render the %s namespace, Deployment %s and StatefulSet %s", FlagsComponent, FlagsNamespace, FlagGateway, FlagStore)
	}
	return f
}

func (f *flagSystem) env(name string) string {
	for _, e := range f.gateway.Spec.Template.Spec.Containers[0].Env {
		if e.Name != name {
			continue
		}
		if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
			return f.config[e.ValueFrom.ConfigMapKeyRef.Name+"/"+e.ValueFrom.ConfigMapKeyRef.Key]
		}
		return e.Value
	}
	return ""
}

// etcdArgs are the member's flags, --name=value.
func (f *flagSystem) etcdArgs() map[string]string {
	args := map[string]string{}
	for _, a := range f.etcd.Spec.Template.Spec.Containers[0].Args {
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	return args
}

// mountedFrom names the secret a file in the pod comes from ("" if none).
func mountedFrom(spec corev1.PodSpec, c corev1.Container, file string) string {
	for _, m := range c.VolumeMounts {
		if !strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				return v.Secret.SecretName
			}
		}
	}
	return ""
}

// checkFlagSystem holds the component to its rules; one finding per line.
func checkFlagSystem(f *flagSystem) []string {
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }

	// The namespace: Pod Security restricted, enforced.
	if f.ns.Name != FlagsNamespace || f.ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		add("Namespace %s: want %s with Pod Security restricted enforced", f.ns.Name, FlagsNamespace)
	}

	// The gateway: the services' rules (labels, grace period, Pod Security,
	// one container, resources, the ADR's probes), its own sizing.
	g := f.gateway
	out = append(out, CheckWorkloadSized(Workload{"Deployment", g.Namespace, g.Name, g.Labels, g.Spec.Template}, false,
		map[string]Sizing{FlagGateway: FlagGatewaySizing})...)
	if g.Spec.Replicas == nil || *g.Spec.Replicas < FlagGatewayMinReplicas {
		add("Deployment %s: replicas %v, want ≥ %d (no single point of failure)", g.Name, deref(g.Spec.Replicas), FlagGatewayMinReplicas)
	}
	if ru := g.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		add("Deployment %s: a rollout must keep every replica up (maxUnavailable 0)", g.Name)
	}
	if !spreadsOverNodes(g.Spec.Template.Spec, g.Spec.Selector) {
		add("Deployment %s: replicas are not spread over nodes", g.Name)
	}
	spec := g.Spec.Template.Spec
	c := spec.Containers[0]
	if img := c.Image; !strings.Contains(img, "@sha256:") && img != "ghcr.io/darktower/"+FlagGateway {
		add("Deployment %s: image %s: want ghcr.io/darktower/%s, pinned by digest (go run . pin-images) or not at all", g.Name, img, FlagGateway)
	}
	apiPort := false
	for _, p := range c.Ports {
		apiPort = apiPort || (p.Name == "api" && p.ContainerPort == FlagGatewayAPIPort && p.Protocol == corev1.ProtocolTCP)
	}
	if !apiPort || f.env("API_ADDR") != fmt.Sprintf(":%d", FlagGatewayAPIPort) || f.env("OPS_ADDR") != fmt.Sprintf(":%d", Liveness.Port) {
		add("Deployment %s: API_ADDR %q, OPS_ADDR %q, container port api: want :%d (TCP) and :%d", g.Name, f.env("API_ADDR"), f.env("OPS_ADDR"), FlagGatewayAPIPort, Liveness.Port)
	}
	// TLS: the API's certificate names the Service; the internal CA is
	// trusted for AC (TLS_CA_FILE) and etcd (SSL_CERT_FILE: system roots).
	for _, v := range []string{"TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE", "SSL_CERT_FILE"} {
		file := f.env(v)
		secret := mountedFrom(spec, c, file)
		cert := f.certs[secret]
		if file == "" || cert == nil {
			add("Deployment %s: %s=%q is not a file of a cert-manager certificate's secret", g.Name, v, file)
		}
		if v == "TLS_CERT_FILE" && cert != nil && !slices.Contains(cert.Spec.DNSNames, FlagGateway+"."+FlagsNamespace+".svc") {
			add("Certificate %s does not name %s.%s.svc, the services' FLAGS_URL host", cert.Name, FlagGateway, FlagsNamespace)
		}
		if (v == "TLS_CA_FILE" || v == "SSL_CERT_FILE") && !strings.HasSuffix(file, "/ca.crt") {
			add("Deployment %s: %s=%s: want the secret's ca.crt (the internal CA)", g.Name, v, file)
		}
	}
	// etcd: every member, over TLS, by the names its certificate holds.
	args := f.etcdArgs()
	serverCert := f.certs[mountedFrom(f.etcd.Spec.Template.Spec, f.etcd.Spec.Template.Spec.Containers[0], args["--cert-file"])]
	members := etcdMemberHosts(f.etcd)
	var want []string
	for _, h := range members {
		want = append(want, fmt.Sprintf("https://%s:%d", h, EtcdClientPort))
	}
	if got := strings.Split(f.env("FLAGS_ETCD_ENDPOINTS"), ","); !slices.Equal(got, want) {
		add("Deployment %s: FLAGS_ETCD_ENDPOINTS %v, want every member over TLS: %v", g.Name, got, want)
	}
	prefix := f.env("FLAGS_PREFIX")
	if !strings.HasPrefix(prefix, "/darktower/flags/") || !strings.HasSuffix(prefix, "/") || strings.Count(prefix, "/") != 4 {
		add("Deployment %s: FLAGS_PREFIX %q: want /darktower/flags/<environment>/ (what flags sync --env writes)", g.Name, prefix)
	}
	if u, err := url.Parse(f.env("FLAGS_AC_JWKS_URL")); err != nil || u.Scheme != "https" || !strings.HasPrefix(u.Host, "ac-service.") {
		add("Deployment %s: FLAGS_AC_JWKS_URL %q: want AC's https JWKS in the services' namespace", g.Name, f.env("FLAGS_AC_JWKS_URL"))
	}

	// etcd: 3 members started together, Pod Security restricted, resources
	// bounded, health probes on the metrics listener, TLS for peers (mutual)
	// and clients.
	e := f.etcd
	if e.Spec.Replicas == nil || *e.Spec.Replicas != EtcdMembers || e.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		add("StatefulSet %s: want %d replicas, podManagementPolicy Parallel", e.Name, EtcdMembers)
	}
	if !spreadsOverNodes(e.Spec.Template.Spec, e.Spec.Selector) {
		add("StatefulSet %s: members are not spread over nodes", e.Name)
	}
	p := &problems{prefix: fmt.Sprintf("StatefulSet %s: ", e.Name)}
	checkPodSecurity(p, e.Spec.Template.Spec)
	out = append(out, p.list...)
	ec := e.Spec.Template.Spec.Containers[0]
	if strings.HasSuffix(ec.Image, ":latest") || !strings.Contains(ec.Image[strings.LastIndex(ec.Image, "/")+1:], ":") {
		add("StatefulSet %s: image %s is not pinned", e.Name, ec.Image)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := ec.Resources.Requests[r], ec.Resources.Limits[r]
		if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
			add("StatefulSet %s: %s request %s / limit %s: both set, request ≤ limit", e.Name, r, req.String(), lim.String())
		}
	}
	for name, probe := range map[string]*corev1.Probe{"livenessProbe /livez": ec.LivenessProbe, "readinessProbe /readyz": ec.ReadinessProbe} {
		path := strings.Fields(name)[1]
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port.IntValue() != EtcdMetricsPort {
			add("StatefulSet %s: %s must be an httpGet on the metrics listener (%d)", e.Name, name, EtcdMetricsPort)
		}
	}
	for k, v := range map[string]string{
		"--listen-client-urls":    fmt.Sprintf("https://0.0.0.0:%d", EtcdClientPort),
		"--listen-peer-urls":      fmt.Sprintf("https://0.0.0.0:%d", EtcdPeerPort),
		"--listen-metrics-urls":   fmt.Sprintf("http://0.0.0.0:%d", EtcdMetricsPort),
		"--peer-client-cert-auth": "true",
	} {
		if args[k] != v {
			add("StatefulSet %s: %s=%q, want %q", e.Name, k, args[k], v)
		}
	}
	for _, k := range []string{"--cert-file", "--key-file", "--peer-cert-file", "--peer-key-file", "--peer-trusted-ca-file"} {
		if f.certs[mountedFrom(e.Spec.Template.Spec, ec, args[k])] == nil {
			add("StatefulSet %s: %s=%q is not a file of a cert-manager certificate's secret", e.Name, k, args[k])
		}
	}
	peerCert := f.certs[mountedFrom(e.Spec.Template.Spec, ec, args["--peer-cert-file"])]
	var initial []string
	for i, h := range members {
		initial = append(initial, fmt.Sprintf("%s-%d=https://%s:%d", e.Name, i, h, EtcdPeerPort))
		if serverCert == nil || !slices.Contains(serverCert.Spec.DNSNames, h) {
			add("etcd's client certificate does not name %s (the gateway dials it)", h)
		}
		if peerCert == nil || !slices.Contains(peerCert.Spec.DNSNames, h) {
			add("etcd's peer certificate does not name %s", h)
		}
	}
	if args["--initial-cluster"] != strings.Join(initial, ",") {
		add("StatefulSet %s: --initial-cluster %q, want %q", e.Name, args["--initial-cluster"], strings.Join(initial, ","))
	}
	wantAdv := fmt.Sprintf("https://$(POD_NAME).%s.%s.svc:", e.Spec.ServiceName, FlagsNamespace)
	if args["--advertise-client-urls"] != wantAdv+fmt.Sprint(EtcdClientPort) || args["--initial-advertise-peer-urls"] != wantAdv+fmt.Sprint(EtcdPeerPort) {
		add("StatefulSet %s: advertised URLs must be the member's stable name %s…", e.Name, wantAdv)
	}
	if serverCert == nil || !slices.Contains(serverCert.Spec.DNSNames, "localhost") {
		add("etcd's client certificate must name localhost: flags sync reaches it through kubectl port-forward")
	}
	if peerCert != nil && !slices.Contains(peerCert.Spec.Usages, certmanagerv1.UsageClientAuth) {
		add("etcd's peer certificate must allow client auth (--peer-client-cert-auth)")
	}
	if hl := f.services[e.Spec.ServiceName]; hl == nil || hl.Spec.ClusterIP != corev1.ClusterIPNone || !hl.Spec.PublishNotReadyAddresses {
		add("Service %s: must be headless and publish not-ready members (they resolve each other before a quorum)", e.Spec.ServiceName)
	}

	// Disruption budgets: the gateway keeps one replica, etcd its quorum.
	budget := func(name string, tmpl corev1.PodTemplateSpec, replicas int32, wantMin int) {
		for _, d := range f.pdbs {
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(tmpl.Labels)) {
				continue
			}
			min := -1
			switch {
			case d.Spec.MinAvailable != nil:
				min = d.Spec.MinAvailable.IntValue()
			case d.Spec.MaxUnavailable != nil:
				min = int(replicas) - d.Spec.MaxUnavailable.IntValue()
			}
			if min < wantMin || min >= int(replicas) {
				add("PodDisruptionBudget %s keeps %d of %d %s pods available, want at least %d and a drain still possible", d.Name, min, replicas, name, wantMin)
			}
			return
		}
		add("%s: no PodDisruptionBudget selects its pods", name)
	}
	budget(FlagGateway, g.Spec.Template, deref32(g.Spec.Replicas), 1)
	budget(FlagStore, e.Spec.Template, deref32(e.Spec.Replicas), EtcdQuorum)

	// Services and scrapes: the gateway's API and ops ports, each scraped
	// on /metrics.
	gs := f.services[FlagGateway]
	ports := map[string]corev1.ServicePort{}
	if gs != nil {
		for _, sp := range gs.Spec.Ports {
			ports[sp.Name] = sp
		}
	}
	if sp, ok := ports["api"]; !ok || sp.Port != FlagGatewayAPIPort || sp.TargetPort.String() != "api" {
		add("Service %s: want port api %d → api", FlagGateway, FlagGatewayAPIPort)
	}
	if sp, ok := ports["ops"]; !ok || sp.Port != Liveness.Port || sp.TargetPort.String() != "ops" {
		add("Service %s: want port ops %d → ops", FlagGateway, Liveness.Port)
	}
	scraped := map[string]string{}
	for _, m := range f.monitors {
		if len(m.Spec.Endpoints) == 1 && m.Spec.Endpoints[0].Path == "/metrics" {
			scraped[m.Spec.Selector.MatchLabels["app.kubernetes.io/name"]] = m.Spec.Endpoints[0].Port
		}
	}
	if scraped[FlagGateway] != "ops" {
		add("no ServiceMonitor scrapes %s's /metrics on port ops", FlagGateway)
	}
	if scraped[FlagStore] != "metrics" {
		add("no ServiceMonitor scrapes %s's /metrics on port metrics", FlagStore)
	}
	return out
}

func deref32(v *int32) int32 {
	if v == nil {
		return 1
	}
	return *v
}

// spreadsOverNodes: a topology spread or pod anti-affinity on the node,
// over the workload's own pods.
func spreadsOverNodes(spec corev1.PodSpec, sel *metav1.LabelSelector) bool {
	for _, c := range spec.TopologySpreadConstraints {
		if c.TopologyKey == "kubernetes.io/hostname" && c.MaxSkew == 1 && c.LabelSelector != nil && equalSelectors(c.LabelSelector, sel) {
			return true
		}
	}
	if a := spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, t := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			if t.PodAffinityTerm.TopologyKey == "kubernetes.io/hostname" {
				return true
			}
		}
		for _, t := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if t.TopologyKey == "kubernetes.io/hostname" {
				return true
			}
		}
	}
	return false
}

func equalSelectors(a, b *metav1.LabelSelector) bool {
	x, err1 := metav1.LabelSelectorAsSelector(a)
	y, err2 := metav1.LabelSelectorAsSelector(b)
	return err1 == nil && err2 == nil && x.String() == y.String()
}

// etcdMemberHosts are the members' stable names, etcd-N.<service>.<ns>.svc.
func etcdMemberHosts(e *appsv1.StatefulSet) []string {
	var hosts []string
	for i := range deref32(e.Spec.Replicas) {
		hosts = append(hosts, fmt.Sprintf("%s-%d.%s.%s.svc", e.Name, i, e.Spec.ServiceName, FlagsNamespace))
	}
	return hosts
}

func TestFlagSystemFollowsTheRules(t *testing.T) {
	for _, p := range checkFlagSystem(loadFlagSystem(t)) {
		t.Error(p)
	}
}

// Every secret a pod of the flag system mounts or reads is made in the
// same rendering: by cert-manager (a Certificate) or external-secrets.
// The CA Issuer's secret comes from external-secrets.
func TestFlagSystemSecretsAreProvided(t *testing.T) {
	f := loadFlagSystem(t)
	var refs []string
	for _, ref := range SecretRefs(podSpecs(f.r)) {
		if f.certs[strings.TrimSuffix(ref, "/*")] == nil {
			refs = append(refs, ref)
		}
	}
	for _, iss := range All[*certmanagerv1.Issuer](f.r) {
		if iss.Spec.CA == nil {
			t.Errorf("Issuer %s: want the internal CA (spec.ca)", iss.Name)
			continue
		}
		refs = append(refs, iss.Spec.CA.SecretName+"/*")
	}
	for _, c := range f.certs {
		found := false
		for _, iss := range All[*certmanagerv1.Issuer](f.r) {
			found = found || (c.Spec.IssuerRef.Kind == "Issuer" && c.Spec.IssuerRef.Name == iss.Name)
		}
		if !found {
			t.Errorf("Certificate %s: issuer %s %s is not in %s", c.Name, c.Spec.IssuerRef.Kind, c.Spec.IssuerRef.Name, FlagsComponent)
		}
	}
	if len(f.certs) < 3 || len(refs) == 0 {
		t.Fatalf("%d certificates, %d other secrets: the check would prove nothing", len(f.certs), len(refs))
	}
	missing, err := CheckSecretsProvided(f.r, refs)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range missing {
		t.Errorf("secret %s is referenced but nothing in %s provides it", m, FlagsComponent)
	}
}

// The flag system is a platform component, never part of a services'
// overlay (and so never in a preview).
func TestFlagSystemIsNotInTheOverlays(t *testing.T) {
	for _, overlay := range overlays {
		for _, o := range decoded(t, overlay).Objects {
			if o.Namespace == FlagsNamespace || (o.Kind == "Namespace" && o.Name == FlagsNamespace) ||
				((o.Kind == "Deployment" || o.Kind == "StatefulSet") && (o.Name == FlagGateway || o.Name == FlagStore)) {
				t.Errorf("%s renders %s", overlay, o.ID())
			}
		}
	}
}

// flagsNetwork is network() plus the flag system's policies and namespace.
func flagsNetwork(t *testing.T, overlay string) (*Network, string) {
	t.Helper()
	n, ns := network(t, "../infra/"+overlay)
	r := decoded(t, FlagsComponent)
	n.Policies = append(n.Policies, All[*networkingv1.NetworkPolicy](r)...)
	for _, o := range All[*corev1.Namespace](r) {
		n.Namespaces[o.Name] = o.Labels
	}
	return n, ns
}

// checkFlagsMatrix compares what the flag system's own policies let in
// and out of the gateway and etcd with FlagsIngress/FlagsEgress.
func checkFlagsMatrix(t *testing.T, n *Network, ns string) []string {
	t.Helper()
	services, others, outside := probePeers(t, ns)
	peers := append(append(append([]Peer{}, services...), others...), outside)
	var problems []string
	for _, self := range others {
		if self.Name != FlagGateway && self.Name != FlagStore {
			continue
		}
		for _, dir := range []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress} {
			got, err := n.Allowed(self, dir, peers, probePorts, outside)
			if err != nil {
				return []string{err.Error()}
			}
			want := flows(FlagsIngress[self.Name])
			if dir == networkingv1.PolicyTypeEgress {
				want = flows(FlagsEgress[self.Name])
			}
			extra, missing := Diff(got, want)
			if len(extra) > 0 {
				problems = append(problems, self.Name+" "+string(dir)+" allows more than its table: "+FormatFlows(extra))
			}
			if len(missing) > 0 {
				problems = append(problems, self.Name+" "+string(dir)+" lacks its table's: "+FormatFlows(missing))
			}
		}
	}
	return problems
}

// The gateway's and etcd's policies are exactly their table, for the
// services of every overlay's namespace (the component serves any
// namespace of the cluster that runs them); end to end (both sides'
// policies) the four services reach the gateway's API and nothing else
// of the flag system, and only the gateway reaches etcd's client port.
func TestFlagSystemNetworkPoliciesAreExactlyItsTable(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			n, ns := flagsNetwork(t, overlay)
			for _, p := range checkFlagsMatrix(t, n, ns) {
				t.Error(p)
			}
			services, others, outside := probePeers(t, ns)
			sources := append(append(append([]Peer{}, services...), others...), outside)
			var gateway, etcd Peer
			for _, o := range others {
				switch o.Name {
				case FlagGateway:
					gateway = o
				case FlagStore:
					etcd = o
				}
			}
			for _, target := range []struct {
				peer    Peer
				port    int32
				clients []string
			}{
				{gateway, FlagGatewayAPIPort, Services},
				{gateway, Liveness.Port, []string{"prometheus"}},
				{etcd, EtcdClientPort, FlagStoreClients},
				{etcd, EtcdPeerPort, []string{FlagStore}},
				{etcd, EtcdMetricsPort, []string{"prometheus"}},
			} {
				var got []string
				for _, src := range sources {
					if src.Name == target.peer.Name && target.port != EtcdPeerPort {
						continue
					}
					ok, err := n.Allows(src, target.peer, Port{corev1.ProtocolTCP, target.port})
					if err != nil {
						t.Fatal(err)
					}
					if ok {
						got = append(got, src.Name)
					}
				}
				want := slices.Clone(target.clients)
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("%s TCP/%d is reachable from %v, want exactly %v", target.peer.Name, target.port, got, want)
				}
			}
			// The gateway reaches AC's JWKS end to end.
			for _, s := range services {
				if s.Name == "ac-service" {
					if ok, err := n.Allows(gateway, s, Port{corev1.ProtocolTCP, 443}); err != nil || !ok {
						t.Errorf("the flag gateway cannot reach %s's JWKS on TCP 443 (%v)", s.Name, err)
					}
				}
			}
		})
	}
}

// The checks must fail on drift: each mutation breaks one rule.
func TestFlagSystemChecksCatchDrift(t *testing.T) {
	base := loadFlagSystem(t)
	if p := checkFlagSystem(base); len(p) != 0 {
		t.Fatalf("the unmutated component has problems: %v", p)
	}
	gw := func(f *flagSystem) *corev1.Container { return &f.gateway.Spec.Template.Spec.Containers[0] }
	et := func(f *flagSystem) *corev1.Container { return &f.etcd.Spec.Template.Spec.Containers[0] }
	setArg := func(f *flagSystem, k, v string) {
		c := et(f)
		for i, a := range c.Args {
			if strings.HasPrefix(a, k+"=") {
				c.Args[i] = k + "=" + v
			}
		}
	}
	for name, c := range map[string]struct {
		mutate func(*flagSystem)
		want   string
	}{
		"one gateway replica":     {func(f *flagSystem) { one := int32(1); f.gateway.Spec.Replicas = &one }, "replicas 1"},
		"gateway liveness period": {func(f *flagSystem) { gw(f).LivenessProbe.PeriodSeconds = 15 }, "livenessProbe timings"},
		"gateway readiness path":  {func(f *flagSystem) { gw(f).ReadinessProbe.HTTPGet.Path = "/health" }, "readinessProbe probes"},
		"gateway tagged :latest":  {func(f *flagSystem) { gw(f).Image = "ghcr.io/darktower/flag-gateway:latest" }, "uses :latest"},
		"gateway writable root":   {func(f *flagSystem) { no := false; gw(f).SecurityContext.ReadOnlyRootFilesystem = &no }, "read-only root"},
		"gateway not spread":      {func(f *flagSystem) { f.gateway.Spec.Template.Spec.TopologySpreadConstraints = nil }, "not spread"},
		"etcd over plain HTTP":    {func(f *flagSystem) { setArg(f, "--listen-client-urls", "http://0.0.0.0:2379") }, "--listen-client-urls"},
		"etcd peers unverified":   {func(f *flagSystem) { setArg(f, "--peer-client-cert-auth", "false") }, "--peer-client-cert-auth"},
		"etcd two members":        {func(f *flagSystem) { two := int32(2); f.etcd.Spec.Replicas = &two }, "want 3 replicas"},
		"etcd runs as root":       {func(f *flagSystem) { u := int64(0); f.etcd.Spec.Template.Spec.SecurityContext.RunAsUser = &u }, "65532:65532"},
		"etcd without a budget":   {func(f *flagSystem) { f.pdbs = nil }, "no PodDisruptionBudget selects"},
		"etcd budget below quorum": {func(f *flagSystem) {
			for _, d := range f.pdbs {
				if d.Name == FlagStore {
					one := intstr.FromInt32(1)
					d.Spec.MinAvailable = &one
				}
			}
		}, "keeps 1 of 3 etcd pods"},
		"endpoint in plain text": {func(f *flagSystem) {
			for i, e := range gw(f).Env {
				if e.Name == "FLAGS_ETCD_ENDPOINTS" {
					gw(f).Env[i].Value = strings.ReplaceAll(e.Value, "https://", "http://")
				}
			}
		}, "FLAGS_ETCD_ENDPOINTS"},
	} {
		f := loadFlagSystem(t)
		f.gateway, f.etcd = f.gateway.DeepCopy(), f.etcd.DeepCopy()
		c.mutate(f)
		found := false
		problems := checkFlagSystem(f)
		for _, p := range problems {
			found = found || strings.Contains(p, c.want)
		}
		if !found {
			t.Errorf("%s: no problem containing %q in %v", name, c.want, problems)
		}
	}
	// The network table: a stranger let into etcd, or a service's egress
	// to the gateway taken away, fails the matrices.
	n, ns := flagsNetwork(t, "overlays/prod")
	for name, mutate := range map[string]func(*Network){
		"etcd open to its namespace": func(n *Network) {
			for _, p := range n.Policies {
				if p.Namespace == FlagsNamespace && p.Name == FlagStore {
					p.Spec.Ingress[0].From = []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}
				}
			}
		},
		"MC loses the gateway": func(n *Network) {
			for _, p := range n.Policies {
				if p.Namespace == ns && p.Name == "meeting-controller" {
					p.Spec.Egress = p.Spec.Egress[:len(p.Spec.Egress)-1]
				}
			}
		},
	} {
		copyN := &Network{Namespaces: n.Namespaces}
		for _, p := range n.Policies {
			copyN.Policies = append(copyN.Policies, p.DeepCopy())
		}
		mutate(copyN)
		problems := append(checkFlagsMatrix(t, copyN, ns), checkMatrix(t, copyN, ns, "overlays/prod")...)
		if len(problems) == 0 {
			t.Errorf("%s: the matrix checks did not notice", name)
		} else {
			t.Logf("%s: caught: %s", name, strings.Join(problems, "; "))
		}
	}
}

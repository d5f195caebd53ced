package policy

// ADR-0012's numbers, as data. The tests hold infra/ to these; changing a
// number here is changing the architecture decision, not a manifest.

// Services are the four Dark Tower services.
var Services = []string{"ac-service", "global-controller", "meeting-controller", "media-handler"}

// Sizing is one row of the ADR's resource sizing table.
type Sizing struct {
	Kind                 string // StatefulSet or Deployment
	CPURequest, CPULimit string
	MemRequest, MemLimit string
	DedicatedNodePool    string // node pool label value, "" for the shared pool
}

// ResourceSizing is the ADR's "Resource Sizing" table.
var ResourceSizing = map[string]Sizing{
	"ac-service":         {Kind: "StatefulSet", CPURequest: "500m", CPULimit: "2000m", MemRequest: "1Gi", MemLimit: "2Gi"},
	"global-controller":  {Kind: "Deployment", CPURequest: "1000m", CPULimit: "3000m", MemRequest: "2Gi", MemLimit: "4Gi"},
	"meeting-controller": {Kind: "Deployment", CPURequest: "2000m", CPULimit: "4000m", MemRequest: "6Gi", MemLimit: "8Gi"},
	"media-handler":      {Kind: "Deployment", CPURequest: "4000m", CPULimit: "8000m", MemRequest: "12Gi", MemLimit: "16Gi", DedicatedNodePool: "media"},
}

// PreviewSizing is the preview overlay's: previews run on one kind node of
// a CI machine (2 cores here), where the ADR's requests (7.5 CPUs, 21 GiB)
// cannot be scheduled. Requests are scaled down so the four services fit;
// limits stay the ADR's, so a preview still shows a service that outgrows
// them. Every other overlay holds the ADR's table exactly.
var PreviewSizing = func() map[string]Sizing {
	out := map[string]Sizing{}
	for name, s := range ResourceSizing {
		s.CPURequest, s.MemRequest = "100m", "256Mi"
		out[name] = s
	}
	return out
}()

// NodePoolLabel and the taint key MH's pool carries (terraform/modules/node-pool).
const NodePoolLabel = "darktower.io/pool"

// Probe is the ADR's probe configuration.
type Probe struct {
	Path                                                              string
	Port                                                              int32
	Scheme                                                            string
	InitialDelay, Period, Timeout, SuccessThreshold, FailureThreshold int32
}

// Liveness and Readiness are the ADR's "Probe Configuration".
var (
	Liveness  = Probe{Path: "/health", Port: 8080, Scheme: "HTTP", InitialDelay: 10, Period: 10, Timeout: 5, SuccessThreshold: 1, FailureThreshold: 3}
	Readiness = Probe{Path: "/ready", Port: 8080, Scheme: "HTTP", InitialDelay: 5, Period: 5, Timeout: 3, SuccessThreshold: 1, FailureThreshold: 3}
)

// Scaling thresholds (ADR "Operational Thresholds": CPU sustained >80%,
// memory >85% → scale out).
const (
	ScaleCPUPercent    = 80
	ScaleMemoryPercent = 85
)

// ShutdownSeconds is the services' own drain: SHUTDOWN_DELAY 3 s +
// SHUTDOWN_GRACE 22 s (docs/services.md). Pods get 30 s.
const (
	ShutdownSeconds               = 25
	TerminationGracePeriodSeconds = 30
)

// RecommendedLabels every workload and pod template carries.
var RecommendedLabels = []string{
	"app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of",
	"app.kubernetes.io/managed-by", "app.kubernetes.io/instance",
}

// Allow is one allowed flow in a service's table: "peer proto/port", the
// peer a service name, a platform peer, or Any (outside the cluster and so
// everyone).
type Allow struct {
	Flow   string
	Reason string // "" for the ADR's own rows; why, for each addition
}

// Reasons for the additions to the ADR's table (docs/operations/network-policy.md).
const (
	whyTokens   = "fetches its own service token (and JWKS) from AC; the ADR's table predates service tokens"
	whyRegister = "MC registers and heartbeats with GC"
	whyMHtoMC   = "the ADR lets MH call MC (MH egress); MC must accept it"
	whyMetrics  = "ADR: /metrics is scraped in-cluster by Prometheus via the ServiceMonitor"
	whyDNS      = "every pod resolves names"
	whyMesh     = "the Linkerd proxy talks to its control plane (identity, destination, policy)"
	whySmoke    = "preview only: the smoke check after each deploy (darktower-smoke) gets tokens from AC and media tickets from MC"
	whyChaos    = "preview only: the chaos run's probes (Litmus experiment pods in dark-tower-chaos) ask each service's /ready during and after each fault"
	// The flag system (ADR-0012 §10) postdates the table: every flow to or
	// from it is an addition (docs/operations/network-policy.md).
	whyFlags     = "the service's flag client subscribes to the flag gateway (ADR-0012 §10, infra/platform/feature-flags); the ADR's table predates the flag system"
	whyFlagsJWKS = "the flag gateway verifies its subscribers' AC tokens against AC's JWKS"
	whyFlagStore = "the flag gateway reads and watches the flags in etcd"
	whyEtcdPeers = "etcd's members replicate to each other (raft, peer TLS)"
)

// NetworkIngress and NetworkEgress are ADR-0012's network policy table,
// one service per key, plus the documented additions.
var (
	NetworkIngress = map[string][]Allow{
		"ac-service": {
			{"global-controller TCP/443", ""},
			{"meeting-controller TCP/443", whyTokens}, {"media-handler TCP/443", whyTokens},
			{"prometheus TCP/8080", whyMetrics},
			{FlagGateway + " TCP/443", whyFlagsJWKS},
		},
		"global-controller": {
			{Any + " TCP/443", ""}, {Any + " UDP/443", ""},
			{"prometheus TCP/8080", whyMetrics},
		},
		"meeting-controller": {
			{"global-controller TCP/443", ""}, {Any + " UDP/443", ""},
			{"media-handler TCP/443", whyMHtoMC},
			{"prometheus TCP/8080", whyMetrics},
		},
		"media-handler": {
			// "Clients media" and "other MH media" on UDP 443: clients are anyone.
			{"meeting-controller TCP/443", ""}, {Any + " UDP/443", ""},
			{"prometheus TCP/8080", whyMetrics},
		},
	}
	NetworkEgress = map[string][]Allow{
		"ac-service": {{"postgresql TCP/5432", ""}, {FlagGateway + " TCP/8443", whyFlags}},
		"global-controller": {
			{"ac-service TCP/443", ""}, {"meeting-controller TCP/443", ""}, {"postgresql TCP/5432", ""},
			{FlagGateway + " TCP/8443", whyFlags},
		},
		"meeting-controller": {
			{"redis TCP/6379", ""}, {"media-handler TCP/443", ""},
			{"global-controller TCP/443", whyRegister}, {"ac-service TCP/443", whyTokens},
			{FlagGateway + " TCP/8443", whyFlags},
		},
		"media-handler": {
			{"meeting-controller TCP/443", ""}, {"media-handler UDP/443", ""},
			{"ac-service TCP/443", whyTokens},
			{FlagGateway + " TCP/8443", whyFlags},
		},
	}
	// EveryPodEgress is allowed to every pod of the namespace.
	EveryPodEgress = []Allow{
		{"kube-dns UDP/53", whyDNS}, {"kube-dns TCP/53", whyDNS},
		{"linkerd TCP/8080", whyMesh}, {"linkerd TCP/8086", whyMesh}, {"linkerd TCP/8090", whyMesh},
	}
)

// SmokeIngress is what the preview overlay adds for its smoke check, and
// SmokeOverlays where it may: nowhere else may a service admit the
// darktower-smoke pod. (GC's API and MH's media admit anyone already.)
var (
	SmokeIngress = map[string][]Allow{
		"ac-service":         {{"darktower-smoke TCP/443", whySmoke}},
		"meeting-controller": {{"darktower-smoke TCP/443", whySmoke}},
	}
	SmokeOverlays = []string{"overlays/preview"}
)

// ChaosIngress is what the overlays that run chaos (ChaosOverlays) add so
// that the Litmus experiment pod in ChaosNamespace can probe each
// service's /ready on the ops port; nowhere else may a service admit it.
var (
	ChaosIngress = map[string][]Allow{
		"ac-service":         {{"chaos-probe TCP/8080", whyChaos}},
		"global-controller":  {{"chaos-probe TCP/8080", whyChaos}},
		"meeting-controller": {{"chaos-probe TCP/8080", whyChaos}},
		"media-handler":      {{"chaos-probe TCP/8080", whyChaos}},
	}
	ChaosOverlays  = []string{"overlays/preview"}
	ChaosNamespace = "dark-tower-chaos"
)

// Data-store reachability (ADR: "TCP:5432 from AC, GC only", "TCP:6379
// from MC only"), end to end, whatever else the policies say.
var (
	PostgresClients = []string{"ac-service", "global-controller"}
	RedisClients    = []string{"meeting-controller"}
)

// The flag system (ADR-0012 §10: self-hosted etcd, WebSocket push to the
// services), infra/platform/feature-flags: one per cluster, in its own
// namespace, serving every services' namespace of the cluster. The ADR
// gives it no rows of its own: its sizing and its network table below
// are additions, held here so that changing them is a decision.
const (
	FlagsComponent = "platform/feature-flags"
	FlagsNamespace = "dark-tower-flags"
	FlagGateway    = "flag-gateway"
	FlagStore      = "etcd"
	// FlagGatewayAPIPort is the gateway's TLS API (its API_ADDR default,
	// images/flag-gateway.yaml), used end to end: Service, container and
	// NetworkPolicies name the same port.
	FlagGatewayAPIPort = 8443
	// FlagGatewayMinReplicas: no single point of failure (a subscriber
	// reconnects to another replica).
	FlagGatewayMinReplicas = 2
	// EtcdMembers and the quorum the disruption budget must keep.
	EtcdMembers = 3
	EtcdQuorum  = EtcdMembers/2 + 1
	// etcd's ports: clients, peers, metrics and health (plain HTTP).
	EtcdClientPort, EtcdPeerPort, EtcdMetricsPort = 2379, 2380, 2381
)

// FlagGatewaySizing is the gateway's resources (not an ADR row): the
// benchmark measured 50–70 KiB of gateway memory per subscriber
// (docs/operations/feature-flags.md), 1000 subscribers well inside 256 MiB.
var FlagGatewaySizing = Sizing{Kind: "Deployment", CPURequest: "100m", CPULimit: "1", MemRequest: "128Mi", MemLimit: "256Mi"}

// FlagsIngress and FlagsEgress are the flag system's own table, every row
// an addition (docs/operations/network-policy.md, "The flag system").
var (
	FlagsIngress = map[string][]Allow{
		FlagGateway: {
			{"ac-service TCP/8443", whyFlags}, {"global-controller TCP/8443", whyFlags},
			{"meeting-controller TCP/8443", whyFlags}, {"media-handler TCP/8443", whyFlags},
			{"prometheus TCP/8080", whyMetrics},
		},
		FlagStore: {
			{FlagGateway + " TCP/2379", whyFlagStore},
			{FlagStore + " TCP/2380", whyEtcdPeers},
			{"prometheus TCP/2381", whyMetrics},
		},
	}
	FlagsEgress = map[string][]Allow{
		FlagGateway: {
			{FlagStore + " TCP/2379", whyFlagStore},
			{"ac-service TCP/443", whyFlagsJWKS},
			{"kube-dns UDP/53", whyDNS}, {"kube-dns TCP/53", whyDNS},
		},
		FlagStore: {
			{FlagStore + " TCP/2380", whyEtcdPeers},
			{"kube-dns UDP/53", whyDNS}, {"kube-dns TCP/53", whyDNS},
		},
	}
	// FlagStoreClients are the only pods that reach etcd's client port
	// through the network; `flags sync` reaches it by kubectl port-forward
	// (into the member's own network namespace).
	FlagStoreClients = []string{FlagGateway}
)

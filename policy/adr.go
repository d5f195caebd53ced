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

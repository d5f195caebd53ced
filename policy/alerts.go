package policy

// Threshold is one row of ADR-0012's "Operational Thresholds" table (plus
// the two latency triggers the ADR names elsewhere) and the alert that
// implements it: the comparison and value in its expression, and how long
// it must hold.
type Threshold struct {
	Alert    string
	Compare  string  // ">" / ">=" / "<" at the top of the expression
	Value    float64 // the threshold, as a ratio or in seconds
	For      string  // the rule's `for`
	Severity string
}

// Thresholds are the alerts infra/platform/observability/alerts.yaml must
// hold, exactly.
var Thresholds = []Threshold{
	{"DarkTowerCPUSustainedHigh", ">", 0.80, "5m", "warning"},               // CPU sustained >80% for 5 min
	{"DarkTowerMemoryHigh", ">", 0.85, "2m", "warning"},                     // memory >85%
	{"NodeIOWaitHigh", ">", 0.20, "10m", "warning"},                         // iowait >20% sustained
	{"NodeCPUStealHigh", ">", 0.10, "5m", "warning"},                        // CPU steal >10%
	{"MediaHandlerBandwidthWarning", ">=", 0.70, "1m", "warning"},           // MH bandwidth warning 70%
	{"MediaHandlerBandwidthHardLimit", ">=", 0.80, "0s", "critical"},        // MH bandwidth hard limit 80%
	{"DatabasePoolUtilizationHigh", ">", 0.80, "5m", "warning"},             // pool scale-up 80%
	{"DatabasePoolUtilizationLow", "<", 0.30, "30m", "info"},                // pool scale-down 30%
	{"PostgreSQLWALArchiveLagWarning", ">", 300, "1m", "warning"},           // WAL archive lag warning 300 s
	{"PostgreSQLWALArchiveLagCritical", ">", 600, "1m", "critical"},         // WAL archive lag critical 600 s
	{"MeetingControllerSignallingLatencyHigh", ">", 0.100, "5m", "warning"}, // MC signalling >100 ms (open item 3)
	{"MediaHandlerForwardingLatencyP99High", ">", 0.030, "1h", "warning"},   // MH forwarding P99 >30 ms (§12 revisit trigger)
}

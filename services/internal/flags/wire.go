package flags

// The push protocol between the flag gateway (internal/flaggw) and the
// services' client, one JSON text message per WebSocket frame.
//
// A client connects to WatchPath?since=R, R being the last revision it
// has applied (0: none). The gateway answers with either the updates
// after R, in revision order, or, when it cannot replay from R (R is 0,
// older than its history — etcd compacted it, or the gateway started
// after it — or from another etcd cluster), a snapshot of every flag at
// its current revision. Then every change follows as it happens.

// WatchPath is the gateway's WebSocket endpoint.
const WatchPath = "/v1/flags/watch"

// Message types.
const (
	MsgSnapshot  = "snapshot"  // Flags is every flag present in etcd at Revision; absent ones are unset (static default)
	MsgUpdate    = "update"    // Flags is what changed at Revision (one etcd transaction)
	MsgHeartbeat = "heartbeat" // nothing changed; the gateway is at Revision
)

// Message is one frame.
type Message struct {
	Type      string  `json:"type"`
	Revision  int64   `json:"revision"`
	ClusterID uint64  `json:"cluster_id,omitempty"`
	Flags     []Entry `json:"flags,omitempty"`
}

// Entry is one flag's value as stored in etcd (canonical text), or its
// deletion, with the etcd revision that last modified it.
type Entry struct {
	Name        string `json:"name"`
	Value       string `json:"value,omitempty"`
	Deleted     bool   `json:"deleted,omitempty"`
	ModRevision int64  `json:"mod_revision"`
}

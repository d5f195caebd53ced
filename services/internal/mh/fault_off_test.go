//go:build !canaryfault

package mh

import (
	"strconv"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/prometheus/client_golang/prometheus"
)

// A real build ignores the canaryfault media variables, even malformed
// ones: they are not configuration, and every datagram is forwarded at
// once.
func TestRealBuildHasNoMediaFaultKnob(t *testing.T) {
	base := map[string]string{"MH_CLIENT_SECRET": "s", "MH_ADVERTISE_URL": "https://mh", "MH_MC_URL": "https://mc",
		"MH_AC_TOKEN_URL": "https://ac/v1/oauth/token", "MH_MEDIA_ADDR": "127.0.0.1:0"}
	var cfg Config
	for _, fault := range []map[string]string{
		{"DT_FAULT_MEDIA_DROP_RATIO": "1", "DT_FAULT_MEDIA_DELAY": "1s"},
		{"DT_FAULT_MEDIA_DROP_RATIO": "lots", "DT_FAULT_MEDIA_DELAY": "forever"},
	} {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range fault {
			env[k] = v
		}
		l := envconf.FromMap(env)
		cfg = LoadConfig(l)
		if err := l.Err(); err != nil {
			t.Fatalf("%v: %v", fault, err)
		}
		if cfg.fault != (mediaFault{}) {
			t.Fatalf("%v: fault %+v", fault, cfg.fault)
		}
	}
	r := startRelayWith(t, 1e9, RelayConfig{Limits: DefaultLimits, fault: cfg.fault}, prometheus.NewRegistry())
	alice, bob := newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))
	start := time.Now()
	for i := range 40 {
		alice.send(r.addr, "s1", strconv.Itoa(i))
		if got := bob.recv(2 * time.Second); got != strconv.Itoa(i) {
			t.Fatalf("datagram %d: bob got %q", i, got)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("40 datagrams took %s", took)
	}
}

package mh

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/flags"
	"github.com/darktower/delivery/services/internal/mticket"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestAdmissionFollowsTheFlagsAtEachJoin: the bandwidth thresholds are
// the flags' values at the moment of each join (here applied to the
// service's flag client as the gateway would push them): with no flag
// set they are the ADR's; mh.admission.hard_limit_ratio 0 refuses the
// next new participant at an idle MH, back to 0.8 admits it;
// mh.bandwidth.warning_ratio moves the reported state. Without a gateway
// configured readiness has no flags entry.
func TestAdmissionFollowsTheFlagsAtEachJoin(t *testing.T) {
	kit, _ := testenv.Kit(t, "media-handler", "")
	s := NewService(kit, Config{ID: testMH, HeartbeatInterval: time.Minute, CapacityMbps: 1000, MeterWindow: time.Second,
		IdleTimeout: time.Minute, Limits: DefaultLimits, ClientSecret: envconf.NewSecret("x")})
	if s.thresholds() != DefaultThresholds {
		t.Fatalf("thresholds with no flag set = %+v, want the ADR's %+v", s.thresholds(), DefaultThresholds)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := mticket.NewKey()
	s.keys.Add(key, time.Now())
	s.mcReg.Mark(time.Now())
	reg := prometheus.NewRegistry()
	r := NewRelay(conn, s.meter, RelayConfig{ID: testMH, Idle: time.Minute, Limits: DefaultLimits, Keys: s.keys,
		AdmitNewSessions: s.mcFresh, Thresholds: s.thresholds}, reg)
	s.relay = r
	done := make(chan error, 1)
	go func() { done <- r.Serve() }()
	t.Cleanup(func() { conn.Close(); <-done })
	ticket := func(pid string) []byte {
		b, err := mticket.Issue(key, testMH, "s1", pid, time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	set := func(rev int64, name, value string) {
		s.flags.Apply(flags.Message{Type: flags.MsgUpdate, Revision: rev, Flags: []flags.Entry{{Name: name, Value: value, ModRevision: rev}}})
	}
	alice, bob := newPeer(t), newPeer(t)
	alice.mustJoin(conn.LocalAddr(), ticket("alice"))

	set(5, flags.MhAdmissionHardLimitRatio, "0")
	if bob.join(conn.LocalAddr(), ticket("bob")) {
		t.Fatal("a new participant was admitted with mh.admission.hard_limit_ratio 0")
	}
	if v := testutil.ToFloat64(r.metrics.datagrams.WithLabelValues(resRejectedCapacity)); v != 1 {
		t.Fatalf("rejected_capacity = %g, want 1", v)
	}
	if st := s.thresholds().State(0); st != StateCritical {
		t.Fatalf("state at 0 with hard limit 0 = %s", st)
	}
	set(6, flags.MhAdmissionHardLimitRatio, "0.8")
	bob.mustJoin(conn.LocalAddr(), ticket("bob"))

	set(7, flags.MhBandwidthWarningRatio, "0")
	if st := s.thresholds().State(0); st != StateWarning {
		t.Fatalf("state at 0 with warning ratio 0 = %s, want warning", st)
	}
	rep := opskit.NewReadiness(prometheus.NewRegistry(), time.Second, s.Checks()).Evaluate(context.Background())
	if _, listed := rep.Components["flags"]; !rep.Ready || listed {
		t.Fatalf("readiness = %+v; want ready, without a flags entry (no gateway configured)", rep)
	}
}

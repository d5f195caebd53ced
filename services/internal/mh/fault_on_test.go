//go:build canaryfault

package mh

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Run with the tag:
//
//	go test -tags canaryfault ./internal/mh -run 'Fault'

// mhEnv is the least environment LoadConfig accepts, plus extra.
func mhEnv(extra map[string]string) map[string]string {
	env := map[string]string{"MH_CLIENT_SECRET": "s", "MH_ADVERTISE_URL": "https://mh", "MH_MC_URL": "https://mc",
		"MH_AC_TOKEN_URL": "https://ac/v1/oauth/token", "MH_MEDIA_ADDR": "127.0.0.1:0"}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func faultFrom(t *testing.T, env map[string]string) mediaFault {
	t.Helper()
	l := envconf.FromMap(mhEnv(env))
	c := LoadConfig(l)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return c.fault
}

// The drop fraction is exact in every 20 consecutive datagrams, including
// fractions that are not binary floats.
func TestFaultMediaDropRatioIsExactPerTwentyDatagrams(t *testing.T) {
	for _, ratio := range []string{"0", "0.05", "0.1", "0.15", "0.3", "0.5", "0.95", "1"} {
		f := faultFrom(t, map[string]string{"DT_FAULT_MEDIA_DROP_RATIO": ratio})
		var dropped []bool
		for range 200 {
			dropped = append(dropped, f.drop())
		}
		r, _ := strconv.ParseFloat(ratio, 64)
		want := int(r*20 + 0.5)
		for start := 0; start+20 <= len(dropped); start++ {
			n := 0
			for _, x := range dropped[start : start+20] {
				if x {
					n++
				}
			}
			if n != want {
				t.Fatalf("DT_FAULT_MEDIA_DROP_RATIO=%s: datagrams %d-%d had %d dropped, want %d", ratio, start, start+19, n, want)
			}
		}
	}
}

// Over a real relay and real sockets: half of 40 datagrams arrive, every
// second one is missing, and MH counts all 40 as forwarded.
func TestFaultMediaDropOverTheRelay(t *testing.T) {
	r := startRelayWith(t, 1e9, RelayConfig{Limits: DefaultLimits,
		fault: faultFrom(t, map[string]string{"DT_FAULT_MEDIA_DROP_RATIO": "0.5"})}, prometheus.NewRegistry())
	alice, bob := newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))
	for i := range 40 {
		alice.send(r.addr, "s1", strconv.Itoa(i))
	}
	var got []string
	for {
		p := bob.recv(time.Second)
		if p == "" {
			break
		}
		got = append(got, p)
	}
	if len(got) != 20 {
		t.Fatalf("%d of 40 datagrams arrived under DT_FAULT_MEDIA_DROP_RATIO=0.5, want 20: %v", len(got), got)
	}
	for i, p := range got {
		if p != strconv.Itoa(2*i) {
			t.Fatalf("arrived %v, want every other datagram (0, 2, 4, ...)", got)
		}
	}
	if n := testutil.ToFloat64(r.metrics.datagrams.WithLabelValues(resForwarded)); n != 40 {
		t.Errorf("mh_datagrams_total{result=forwarded} = %g, want 40 (a dropped datagram is counted as forwarded)", n)
	}
}

// Each datagram waits DT_FAULT_MEDIA_DELAY before it is forwarded, and the
// latency histogram sees it.
func TestFaultMediaDelayIsMeasured(t *testing.T) {
	const delay = 20 * time.Millisecond
	reg := prometheus.NewRegistry()
	r := startRelayWith(t, 1e9, RelayConfig{Limits: DefaultLimits,
		fault: faultFrom(t, map[string]string{"DT_FAULT_MEDIA_DELAY": delay.String()})}, reg)
	alice, bob := newPeer(t), newPeer(t)
	alice.mustJoin(r.addr, r.ticket(t, "s1", "alice"))
	bob.mustJoin(r.addr, r.ticket(t, "s1", "bob"))
	const n = 10
	for i := range n {
		start := time.Now()
		alice.send(r.addr, "s1", strconv.Itoa(i))
		if got := bob.recv(2 * time.Second); got != strconv.Itoa(i) {
			t.Fatalf("bob got %q, want %d", got, i)
		}
		if took := time.Since(start); took < delay {
			t.Errorf("datagram %d arrived after %s, under DT_FAULT_MEDIA_DELAY=%s", i, took, delay)
		}
	}
	// The last observation follows the last datagram's send: wait for it
	// (forward observes, then counts).
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if testutil.ToFloat64(r.metrics.datagrams.WithLabelValues(resForwarded)) == n {
			break
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "mh_forwarding_latency_seconds" {
			continue
		}
		found = true
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != n {
			t.Errorf("%d latency observations, want %d", h.GetSampleCount(), n)
		}
		if h.GetSampleSum() < n*delay.Seconds() {
			t.Errorf("latency sum %gs, under %d × %s", h.GetSampleSum(), n, delay)
		}
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() <= delay.Seconds() && b.GetCumulativeCount() != 0 {
				t.Errorf("%d observations ≤ %gs, under the delay", b.GetCumulativeCount(), b.GetUpperBound())
			}
		}
	}
	if !found {
		t.Fatal("no mh_forwarding_latency_seconds")
	}
}

// Out-of-range or malformed values stop MH at start-up, naming the
// variable.
func TestFaultMediaRefusesBadValues(t *testing.T) {
	for name, vals := range map[string][]string{
		"DT_FAULT_MEDIA_DROP_RATIO": {"1.5", "-0.1", "half", "NaN", "Inf", "20%"},
		"DT_FAULT_MEDIA_DELAY":      {"2s", "-1ms", "100", "slow"},
	} {
		for _, v := range vals {
			l := envconf.FromMap(mhEnv(map[string]string{name: v}))
			LoadConfig(l)
			if err := l.Err(); err == nil || !strings.Contains(err.Error(), name+" is malformed") {
				t.Errorf("%s=%q: err %v, want one naming %s", name, v, err, name)
			}
		}
	}
}

// An active fault is announced at start-up with both values; an inactive
// one is not.
func TestFaultMediaAnnounced(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{"DT_FAULT_MEDIA_DROP_RATIO": "0.25", "DT_FAULT_MEDIA_DELAY": "15ms"}, true},
		{map[string]string{}, false},
	} {
		l := envconf.FromMap(mhEnv(c.env))
		cfg := LoadConfig(l)
		if err := l.Err(); err != nil {
			t.Fatal(err)
		}
		kit, logs := testenv.Kit(t, "media-handler", "")
		NewService(kit, cfg)
		out := logs.String()
		got := strings.Contains(out, "canaryfault build")
		if got != c.want {
			t.Errorf("%v: announced = %v, want %v:\n%s", c.env, got, c.want, out)
		}
		if c.want && (!strings.Contains(out, `"DT_FAULT_MEDIA_DROP_RATIO":"0.25"`) || !strings.Contains(out, `"DT_FAULT_MEDIA_DELAY":"15ms"`)) {
			t.Errorf("the warning does not name both values:\n%s", out)
		}
	}
}

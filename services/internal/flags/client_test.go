package flags

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newClient(t *testing.T, o Options) (*Client, *testenv.SyncBuffer) {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	return New(o), logs
}

func TestColdStartWithNoCacheServesTheCompiledDefaults(t *testing.T) {
	c, _ := newClient(t, Options{CacheFile: filepath.Join(t.TempDir(), "flags.json")})
	if c.Bool(GcHttp3Enabled) || c.Bool(McWebtransportEnabled) || !c.Bool(PlatformCanaryAutoPromote) ||
		c.Float(MhAdmissionHardLimitRatio) != 0.8 || c.Float(MhBandwidthWarningRatio) != 0.7 ||
		c.Int(AcTokenTtlSeconds) != 600 || c.String(McMhSelectionStrategy) != "rendezvous" || c.Int(GcRegistryMcTtlSeconds) != 30 {
		t.Fatal("the static defaults are not the catalogue's")
	}
	if _, src, _ := c.Lookup(AcTokenTtlSeconds); src != FromDefault || c.Revision() != 0 {
		t.Fatalf("source %s, revision %d; want default, 0", src, c.Revision())
	}
}

func TestValuesOnlyMoveForwardAndMalformedOnesAreRejected(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, logs := newClient(t, Options{Registry: reg})
	c.Apply(Message{Type: MsgSnapshot, Revision: 10, Flags: []Entry{{Name: AcTokenTtlSeconds, Value: "300", ModRevision: 9}}})
	if c.Int(AcTokenTtlSeconds) != 300 || c.Revision() != 10 {
		t.Fatalf("snapshot not applied: %d at %d", c.Int(AcTokenTtlSeconds), c.Revision())
	}
	// An older value (a lagging gateway, a replay) never comes back.
	c.Apply(Message{Type: MsgUpdate, Revision: 8, Flags: []Entry{{Name: AcTokenTtlSeconds, Value: "120", ModRevision: 8}}})
	c.Apply(Message{Type: MsgSnapshot, Revision: 9, Flags: []Entry{{Name: AcTokenTtlSeconds, Value: "120", ModRevision: 7}}})
	if c.Int(AcTokenTtlSeconds) != 300 || c.Revision() != 10 {
		t.Fatalf("flipped back to an older value: %d at %d", c.Int(AcTokenTtlSeconds), c.Revision())
	}
	for _, bad := range []Entry{
		{Name: AcTokenTtlSeconds, Value: "banana", ModRevision: 11},               // not an int
		{Name: AcTokenTtlSeconds, Value: "5000", ModRevision: 12},                 // above max 900
		{Name: McMhSelectionStrategy, Value: "fastest", ModRevision: 13},          // not allowed
		{Name: GcHttp3Enabled, Value: "yes", ModRevision: 14},                     // not a bool
		{Name: MhAdmissionHardLimitRatio, Value: "NaN", ModRevision: 15},          // not finite
		{Name: MhAdmissionHardLimitRatio, Value: "1.5", ModRevision: 16},          // above max 1
		{Name: McMhSelectionStrategy, Value: "", ModRevision: 17, Deleted: false}, // empty
	} {
		c.Apply(Message{Type: MsgUpdate, Revision: bad.ModRevision, Flags: []Entry{bad}})
	}
	if c.Int(AcTokenTtlSeconds) != 300 || c.String(McMhSelectionStrategy) != "rendezvous" || c.Bool(GcHttp3Enabled) ||
		c.Float(MhAdmissionHardLimitRatio) != 0.8 {
		t.Fatal("a malformed value replaced the previous one")
	}
	if n := testutil.ToFloat64(c.rejected.WithLabelValues(AcTokenTtlSeconds)); n != 2 {
		t.Fatalf("flags_rejected_total{flag=ac.token.ttl_seconds} = %v, want 2", n)
	}
	if got := strings.Count(logs.String(), `"msg":"flag value rejected; previous value kept"`); got != 7 {
		t.Fatalf("%d rejections logged, want 7:\n%s", got, logs)
	}
	// A good value after the bad ones applies, is logged and counted.
	c.Apply(Message{Type: MsgUpdate, Revision: 20, Flags: []Entry{{Name: AcTokenTtlSeconds, Value: "900", ModRevision: 20}}})
	if c.Int(AcTokenTtlSeconds) != 900 || !strings.Contains(logs.String(), `"msg":"flag changed","component":"flags","flag":"ac.token.ttl_seconds","value":"900"`) {
		t.Fatalf("valid value after rejected ones: %d\n%s", c.Int(AcTokenTtlSeconds), logs)
	}
	// Deleted in etcd: back to the static default.
	c.Apply(Message{Type: MsgUpdate, Revision: 21, Flags: []Entry{{Name: AcTokenTtlSeconds, Deleted: true, ModRevision: 21}}})
	if _, src, _ := c.Lookup(AcTokenTtlSeconds); c.Int(AcTokenTtlSeconds) != 600 || src != FromDefault {
		t.Fatalf("deleted flag: %d from %s, want the default 600", c.Int(AcTokenTtlSeconds), src)
	}
	// A snapshot without a flag held live means it was deleted after it.
	c.Apply(Message{Type: MsgUpdate, Revision: 22, Flags: []Entry{{Name: GcHttp3Enabled, Value: "true", ModRevision: 22}}})
	c.Apply(Message{Type: MsgSnapshot, Revision: 30})
	if c.Bool(GcHttp3Enabled) || c.Revision() != 30 {
		t.Fatal("a snapshot lacking the flag did not restore its default")
	}
}

func TestTheCacheCarriesValuesAndRevisionAcrossRestarts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cache", "flags.json")
	c, _ := newClient(t, Options{CacheFile: file})
	c.Apply(Message{Type: MsgSnapshot, Revision: 42, ClusterID: 7, Flags: []Entry{
		{Name: AcTokenTtlSeconds, Value: "120", ModRevision: 40},
		{Name: McMhSelectionStrategy, Value: "round-robin", ModRevision: 41},
	}})
	again, logs := newClient(t, Options{CacheFile: file})
	if again.Int(AcTokenTtlSeconds) != 120 || again.String(McMhSelectionStrategy) != "round-robin" || again.Revision() != 42 {
		t.Fatalf("from the cache: %d %q at %d", again.Int(AcTokenTtlSeconds), again.String(McMhSelectionStrategy), again.Revision())
	}
	if _, src, _ := again.Lookup(AcTokenTtlSeconds); src != FromCache {
		t.Fatalf("source %s, want cache", src)
	}
	if !strings.Contains(logs.String(), "flags loaded from cache") {
		t.Fatal("loading the cache was not logged")
	}
	// A cached value the catalogue no longer allows is not used.
	if err := os.WriteFile(file, []byte(`{"revision":50,"flags":{"ac.token.ttl_seconds":{"value":"1","mod_revision":50}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c3, logs := newClient(t, Options{CacheFile: file})
	if c3.Int(AcTokenTtlSeconds) != 600 || !strings.Contains(logs.String(), "cached flag value rejected") {
		t.Fatalf("out-of-bounds cached value: %d\n%s", c3.Int(AcTokenTtlSeconds), logs)
	}
	// A corrupt cache: defaults, logged.
	if err := os.WriteFile(file, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	c4, logs := newClient(t, Options{CacheFile: file})
	if c4.Int(AcTokenTtlSeconds) != 600 || c4.Revision() != 0 || !strings.Contains(logs.String(), "flag cache unreadable") {
		t.Fatalf("corrupt cache: %d at %d\n%s", c4.Int(AcTokenTtlSeconds), c4.Revision(), logs)
	}
}

func TestAWrongGetterOrNameIsLoggedOnceAndReturnsZero(t *testing.T) {
	c, logs := newClient(t, Options{})
	if c.Bool(AcTokenTtlSeconds) || c.Int("no.such.flag") != 0 || c.Int("no.such.flag") != 0 {
		t.Fatal("misuse returned a non-zero value")
	}
	if n := strings.Count(logs.String(), "flag read with the wrong getter or name"); n != 2 {
		t.Fatalf("%d misuse lines, want 2 (one per name and getter):\n%s", n, logs)
	}
}

// TestReadinessDoesNotDependOnFlags: with no gateway at all, the check is
// reported (dependency_up{dependency="flags"} 0) and the pod stays ready.
func TestReadinessDoesNotDependOnFlags(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := newClient(t, Options{URL: "wss://127.0.0.1:" + strconv.Itoa(port) + WatchPath, MinBackoff: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	reg := prometheus.NewRegistry()
	r := opskit.NewReadiness(reg, time.Second, []opskit.Check{c.Check()})
	rep := r.Evaluate(context.Background())
	if !rep.Ready || rep.Components["flags"] {
		t.Fatalf("ready=%v flags=%v; want ready with flags unhealthy", rep.Ready, rep.Components["flags"])
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "dependency_up" && m.GetLabel()[0].GetValue() == "flags" {
				found = true
				if v := m.GetGauge().GetValue(); v != 0 {
					t.Fatalf("dependency_up{dependency=flags} = %v, want 0", v)
				}
			}
		}
	}
	if !found {
		t.Fatal("no dependency_up{dependency=flags}")
	}
}

// TestReadinessEntryOnlyWithAGateway: a service adds Checks() to its
// readiness: nothing without a gateway (its /ready as before flags), one
// informational entry with one, unhealthy until connected.
func TestReadinessEntryOnlyWithAGateway(t *testing.T) {
	none, _ := newClient(t, Options{})
	if c := none.Checks(); c != nil {
		t.Fatalf("checks without a gateway = %v, want none", c)
	}
	gw, _ := newClient(t, Options{URL: "wss://127.0.0.1:1/v1/flags/watch"})
	c := gw.Checks()
	if len(c) != 1 || c[0].Name != "flags" || !c[0].Informational || c[0].Func(context.Background()) == nil {
		t.Fatalf("checks with a gateway = %+v, want one informational flags entry, unhealthy while not connected", c)
	}
	rep := opskit.NewReadiness(prometheus.NewRegistry(), time.Second, c).Evaluate(context.Background())
	if !rep.Ready || rep.Components["flags"] {
		t.Fatalf("readiness = %+v; want ready with flags unhealthy", rep)
	}
}

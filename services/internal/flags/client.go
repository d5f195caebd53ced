// Package flags is the services' feature-flag client (ADR-0012 §10,
// docs/operations/feature-flags.md). Every read falls back through three
// tiers: the live value pushed by the flag gateway (internal/flaggw) over
// a WebSocket, else the last value cached on the pod (a file), else the
// static default compiled from infra/flags/catalog.yaml (catalog_gen.go).
// The flag system never gates the service: getters never block and the
// readiness check it offers is informational.
package flags

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/prometheus/client_golang/prometheus"
)

// Source says which tier a value comes from.
type Source string

// The tiers.
const (
	FromDefault Source = "default"
	FromCache   Source = "cache"
	FromLive    Source = "live"
)

// Options configure a Client.
type Options struct {
	// URL is the gateway's watch endpoint, e.g.
	// wss://flag-gateway/v1/flags/watch; empty: no live tier (cache and
	// defaults only).
	URL string
	// HTTPClient dials the gateway (its TLS trusts the gateway's CA). Its
	// transport must speak HTTP/1.1 (a WebSocket upgrade); nil: a client
	// with the system roots.
	HTTPClient *http.Client
	// CacheFile keeps the last known values and revision across restarts;
	// empty: no cache tier.
	CacheFile string
	Logger    *slog.Logger
	// Registry receives flags_applied_total, flags_rejected_total,
	// flags_revision and flags_connected; nil: not registered.
	Registry prometheus.Registerer
	// Backoff between reconnection attempts, doubling from MinBackoff to
	// MaxBackoff with jitter; 100 ms and 5 s when zero.
	MinBackoff, MaxBackoff time.Duration
	// StaleAfter: a connection silent this long (the gateway sends a
	// heartbeat every 10 s) is dropped and redialled; 35 s when zero.
	StaleAfter time.Duration
	// OnChange, if set, is called after a value changes (from the
	// applying goroutine; it must not block).
	OnChange func(name string, v Value, src Source, revision int64)
	// Token, if set, returns the bearer token sent with each subscription
	// (an AC access token for the audience flag-gateway): the gateway
	// refuses subscribers without a valid one (401) or whose subject it
	// does not allow (403). Called at every dial.
	Token func(ctx context.Context) (string, error)
}

// RefusedError is the gateway refusing a subscription (401: no valid
// token; 403: the token's subject may not subscribe).
type RefusedError struct{ Code int }

func (e *RefusedError) Error() string {
	if e.Code == http.StatusForbidden {
		return "the flag gateway refused the subscription (403): this service's client id is not in its FLAGS_SUBSCRIBERS"
	}
	return fmt.Sprintf("the flag gateway refused the subscription (%d): no valid AC token for its audience (check FLAGS_AUDIENCE and the AC client's audiences)", e.Code)
}

type entry struct {
	val    Value
	modRev int64
	src    Source
}

// state is immutable once published: readers take it without a lock.
type state struct {
	flags     map[string]entry
	rev       int64
	clusterID uint64
}

// Client holds the flags' values.
type Client struct {
	o         Options
	log       *slog.Logger
	cur       atomic.Pointer[state]
	mu        sync.Mutex // serialises apply
	connected atomic.Bool
	warned    sync.Map // name → struct{}: misuse logged once

	applied, rejected *prometheus.CounterVec
	revGauge, connG   prometheus.Gauge
}

// New returns a client holding the cached values where the cache file has
// them and the static defaults otherwise. It never fails: an unreadable or
// corrupt cache is logged and ignored.
func New(o Options) *Client {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(5*time.Second, o.MinBackoff)
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = 35 * time.Second
	}
	c := &Client{o: o, log: o.Logger.With("component", "flags")}
	c.applied = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flags_applied_total",
		Help: "Flag values applied (changed) on this pod, by flag."}, []string{"flag"})
	c.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flags_rejected_total",
		Help: "Flag values rejected as malformed (wrong type, not allowed, out of bounds); the previous value is kept."}, []string{"flag"})
	c.revGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "flags_revision", Help: "The etcd revision the pod's flags are at."})
	c.connG = prometheus.NewGauge(prometheus.GaugeOpts{Name: "flags_connected", Help: "1 while connected to the flag gateway."})
	if o.Registry != nil {
		o.Registry.MustRegister(c.applied, c.rejected, c.revGauge, c.connG)
	}
	st := &state{flags: map[string]entry{}}
	for name, spec := range catalog {
		v, err := spec.Parse(spec.Default)
		if err != nil { // catalog_gen.go is generated from a validated catalogue
			panic(fmt.Sprintf("flags: static default of %s: %v", name, err))
		}
		st.flags[name] = entry{val: v, src: FromDefault}
	}
	if o.CacheFile != "" {
		c.loadCache(st)
	}
	c.cur.Store(st)
	c.revGauge.Set(float64(st.rev))
	return c
}

// cacheFile is the cache's JSON form.
type cacheFile struct {
	Revision  int64                 `json:"revision"`
	ClusterID uint64                `json:"cluster_id,omitempty"`
	Flags     map[string]cacheEntry `json:"flags"`
}

type cacheEntry struct {
	Value       string `json:"value"`
	ModRevision int64  `json:"mod_revision"`
}

func (c *Client) loadCache(st *state) {
	b, err := os.ReadFile(c.o.CacheFile)
	if errors.Is(err, os.ErrNotExist) {
		c.log.Info("no flag cache yet; static defaults until the gateway answers", "cache_file", c.o.CacheFile)
		return
	}
	var cf cacheFile
	if err == nil {
		err = json.Unmarshal(b, &cf)
	}
	if err != nil {
		c.log.Error("flag cache unreadable; static defaults until the gateway answers", "cache_file", c.o.CacheFile, "error", err.Error())
		return
	}
	for name, ce := range cf.Flags {
		spec, ok := catalog[name]
		if !ok {
			continue
		}
		v, err := spec.Parse(ce.Value)
		if err != nil {
			// The catalogue changed since the cache was written.
			c.log.Error("cached flag value rejected; static default used", "flag", name, "error", err.Error(), "cache_file", c.o.CacheFile)
			continue
		}
		st.flags[name] = entry{val: v, modRev: ce.ModRevision, src: FromCache}
	}
	st.rev, st.clusterID = cf.Revision, cf.ClusterID
	c.log.Info("flags loaded from cache", "cache_file", c.o.CacheFile, "revision", cf.Revision)
}

func (c *Client) saveCache(st *state) {
	if c.o.CacheFile == "" {
		return
	}
	cf := cacheFile{Revision: st.rev, ClusterID: st.clusterID, Flags: map[string]cacheEntry{}}
	for name, e := range st.flags {
		if e.src != FromDefault {
			cf.Flags[name] = cacheEntry{Value: e.val.Raw, ModRevision: e.modRev}
		}
	}
	b, _ := json.Marshal(cf)
	// Written aside and renamed: a crash mid-write leaves the old cache.
	tmp := c.o.CacheFile + ".tmp"
	err := os.MkdirAll(filepath.Dir(c.o.CacheFile), 0o755)
	if err == nil {
		err = os.WriteFile(tmp, b, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, c.o.CacheFile)
	}
	if err != nil {
		c.log.Error("writing the flag cache failed; values stay live in memory", "cache_file", c.o.CacheFile, "error", err.Error())
	}
}

// get returns the flag's value, or false (logged once) for a name the
// catalogue lacks or a getter of the wrong type: a programming error that
// must not take the service down.
func (c *Client) get(name string, t Type) (Value, bool) {
	e, ok := c.cur.Load().flags[name]
	if !ok || e.val.Type != t {
		if _, done := c.warned.LoadOrStore(name+"/"+t.String(), struct{}{}); !done {
			what := "not in the catalogue (infra/flags/catalog.yaml)"
			if ok {
				what = "is a " + e.val.Type.String() + " flag"
			}
			c.log.Error("flag read with the wrong getter or name; zero value returned", "flag", name, "getter", t.String(), "problem", what)
		}
		return Value{}, false
	}
	return e.val, true
}

// Bool returns a bool flag's value (false for a misuse, logged).
func (c *Client) Bool(name string) bool { v, _ := c.get(name, TypeBool); return v.B }

// Int returns an int flag's value (0 for a misuse, logged).
func (c *Client) Int(name string) int64 { v, _ := c.get(name, TypeInt); return v.I }

// Float returns a float flag's value (0 for a misuse, logged).
func (c *Client) Float(name string) float64 { v, _ := c.get(name, TypeFloat); return v.F }

// String returns a string flag's value ("" for a misuse, logged).
func (c *Client) String(name string) string { v, _ := c.get(name, TypeString); return v.Raw }

// Lookup returns a flag's value and where it comes from.
func (c *Client) Lookup(name string) (Value, Source, bool) {
	e, ok := c.cur.Load().flags[name]
	return e.val, e.src, ok
}

// Revision is the etcd revision the values are at (0: defaults only).
func (c *Client) Revision() int64 { return c.cur.Load().rev }

// Connected reports whether the client is connected to the gateway now.
func (c *Client) Connected() bool { return c.connected.Load() }

// Checks is what a service adds to its readiness checks: Check when a
// gateway is configured, nothing otherwise (a service without FLAGS_URL
// reports readiness exactly as before flags).
func (c *Client) Checks() []opskit.Check {
	if c.o.URL == "" {
		return nil
	}
	return []opskit.Check{c.Check()}
}

// Check is the flag system's readiness entry: informational, so it shows
// as dependency_up{dependency="flags"} but never makes the pod not ready.
func (c *Client) Check() opskit.Check {
	return opskit.Check{Name: "flags", Informational: true, Func: func(context.Context) error {
		if !c.connected.Load() {
			return errors.New("not connected to the flag gateway; serving cached or default values")
		}
		return nil
	}}
}

// Apply applies one gateway message. Values only move forward: an entry
// whose revision is not newer than the one held is ignored, so a
// reconnect, a replay or a lagging gateway never brings back an older
// value. A malformed value is rejected (logged, counted) and the previous
// value kept.
func (c *Client) Apply(m Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.cur.Load()
	st := &state{flags: make(map[string]entry, len(old.flags)), rev: old.rev, clusterID: old.clusterID}
	for k, v := range old.flags {
		st.flags[k] = v
	}
	if m.ClusterID != 0 && old.clusterID != 0 && m.ClusterID != old.clusterID {
		// Another etcd cluster: its revisions are not comparable with
		// ours, so its snapshot is taken whole.
		c.log.Warn("flag gateway serves another etcd cluster; taking its snapshot whole",
			"old_cluster_id", strconv.FormatUint(old.clusterID, 16), "cluster_id", strconv.FormatUint(m.ClusterID, 16))
		for k, e := range st.flags {
			e.modRev = 0
			st.flags[k] = e
		}
		st.rev = 0
	}
	if m.ClusterID != 0 {
		st.clusterID = m.ClusterID
	}
	type changed struct {
		name string
		e    entry
	}
	var changes []changed
	set := func(name string, e entry) {
		st.flags[name] = e
		changes = append(changes, changed{name, e})
	}
	present := map[string]bool{}
	for _, in := range m.Flags {
		present[in.Name] = true
		spec, known := catalog[in.Name]
		if !known {
			if _, done := c.warned.LoadOrStore("unknown/"+in.Name, struct{}{}); !done {
				c.log.Info("flag unknown to this build ignored (catalogue newer than the service?)", "flag", in.Name)
			}
			continue
		}
		cur := st.flags[in.Name]
		if in.ModRevision <= cur.modRev {
			continue // already applied, or older than what we hold
		}
		if in.Deleted {
			def, _ := spec.Parse(spec.Default)
			set(in.Name, entry{val: def, modRev: in.ModRevision, src: FromDefault})
			continue
		}
		v, err := spec.Parse(in.Value)
		if err != nil {
			c.rejected.WithLabelValues(in.Name).Inc()
			c.log.Error("flag value rejected; previous value kept", "flag", in.Name, "error", err.Error(),
				"kept", cur.val.Raw, "revision", in.ModRevision)
			continue
		}
		set(in.Name, entry{val: v, modRev: in.ModRevision, src: FromLive})
	}
	if m.Type == MsgSnapshot {
		// Absent from a snapshot: deleted after what we hold, or never set.
		for name, cur := range st.flags {
			if !present[name] && cur.src != FromDefault && cur.modRev < m.Revision {
				spec := catalog[name]
				def, _ := spec.Parse(spec.Default)
				set(name, entry{val: def, modRev: m.Revision, src: FromDefault})
			}
		}
	}
	// Values pushed live that equal the cached ones still become live.
	if m.Revision > st.rev {
		st.rev = m.Revision
	}
	c.cur.Store(st)
	c.revGauge.Set(float64(st.rev))
	if len(changes) > 0 || st.rev != old.rev {
		c.saveCache(st)
	}
	for _, ch := range changes {
		prev := old.flags[ch.name]
		c.applied.WithLabelValues(ch.name).Inc()
		if prev.val.Raw != ch.e.val.Raw {
			c.log.Info("flag changed", "flag", ch.name, "value", ch.e.val.Raw, "previous", prev.val.Raw,
				"source", string(ch.e.src), "revision", ch.e.modRev)
		}
		if c.o.OnChange != nil {
			c.o.OnChange(ch.name, ch.e.val, ch.e.src, ch.e.modRev)
		}
	}
}

// Run keeps a connection to the gateway until ctx ends, redialling with
// backoff and resuming from the revision held. It returns nil when ctx
// ends; it never fails the service.
func (c *Client) Run(ctx context.Context) error {
	if c.o.URL == "" {
		c.log.Warn("no flag gateway configured; cached or static default values only")
		<-ctx.Done()
		return nil
	}
	backoff := c.o.MinBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := c.session(ctx)
		c.connected.Store(false)
		c.connG.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			backoff = c.o.MinBackoff // it had been working: retry promptly
		}
		// Jitter spreads the reconnections of many pods after a gateway restart.
		wait := backoff/2 + rand.N(backoff/2+1)
		var refused *RefusedError
		if errors.As(err, &refused) {
			// Not a network blip: it stays refused until configuration
			// changes, so it is an error (logged at each attempt, which
			// backs off to MaxBackoff).
			c.log.Error("flag gateway subscription refused; cached or default values stay in force", "error", err.Error(),
				"retry_in", wait.String(), "revision", c.Revision())
		} else {
			c.log.Warn("flag gateway connection lost; cached values stay in force", "error", err.Error(),
				"retry_in", wait.String(), "revision", c.Revision())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, c.o.MaxBackoff)
	}
	return nil
}

var errToken = errors.New("obtaining a token for the flag gateway failed")

// session is one connection: dial with the revision held, apply frames.
func (c *Client) session(ctx context.Context) error {
	u, err := url.Parse(c.o.URL)
	if err != nil {
		return fmt.Errorf("flag gateway URL %q: %w", c.o.URL, err)
	}
	q := u.Query()
	st := c.cur.Load()
	q.Set("since", strconv.FormatInt(st.rev, 10))
	if st.clusterID != 0 {
		q.Set("cluster", strconv.FormatUint(st.clusterID, 16))
	}
	u.RawQuery = q.Encode()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	opts := &websocket.DialOptions{HTTPClient: c.o.HTTPClient}
	if c.o.Token != nil {
		tok, err := c.o.Token(dctx)
		if err != nil {
			cancel()
			return fmt.Errorf("%w: %v", errToken, err)
		}
		opts.HTTPHeader = http.Header{"Authorization": []string{"Bearer " + tok}}
	}
	conn, resp, err := websocket.Dial(dctx, u.String(), opts)
	cancel()
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			return &RefusedError{Code: resp.StatusCode}
		}
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(4 << 20)
	c.connected.Store(true)
	c.connG.Set(1)
	c.log.Info("connected to the flag gateway", "url", c.o.URL, "since", q.Get("since"))
	for {
		rctx, cancel := context.WithTimeout(ctx, c.o.StaleAfter)
		_, data, err := conn.Read(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				conn.Close(websocket.StatusNormalClosure, "shutting down")
			}
			return err
		}
		var m Message
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("malformed frame from the flag gateway: %w", err)
		}
		switch m.Type {
		case MsgSnapshot, MsgUpdate:
			c.Apply(m)
		case MsgHeartbeat:
			// Frames arrive in order, so every change up to the
			// gateway's revision has been applied: resume from there.
			c.Apply(Message{Type: MsgUpdate, Revision: m.Revision, ClusterID: m.ClusterID})
		}
	}
}

// HTTPClient is a client for the gateway's WebSocket: HTTP/1.1 only (an
// HTTP/2 connection cannot be upgraded), trusting cfg's roots (nil: the
// system's).
func HTTPClient(cfg *tls.Config) *http.Client {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 5 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
	}}
}

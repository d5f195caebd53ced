package ac

import (
	"context"
	"hash/maphash"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// bucketTable is a fixed array of token buckets indexed by a keyed hash of
// a key (a source IP or a client id): rate limiting allocates nothing per
// key, so a flood of distinct keys costs no memory (keys that collide
// share a bucket).
type bucketTable struct {
	rate, burst float64
	seed        maphash.Seed
	mu          [64]sync.Mutex
	b           [4096]struct {
		tokens   float64
		last     int64
		inflight int
	}
}

func newBucketTable(rate, burst float64) *bucketTable {
	return &bucketTable{rate: rate, burst: burst, seed: maphash.MakeSeed()}
}

func (t *bucketTable) slot(key string) int {
	return int(maphash.String(t.seed, key) % uint64(len(t.b)))
}

// take spends a token for key; when none is left it returns the wait until
// the next one.
func (t *bucketTable) take(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	i := t.slot(key)
	mu := &t.mu[i%len(t.mu)]
	mu.Lock()
	defer mu.Unlock()
	b := &t.b[i]
	n := now.UnixNano()
	if b.last == 0 {
		b.tokens = t.burst
	} else {
		b.tokens = min(t.burst, b.tokens+float64(n-b.last)/1e9*t.rate)
	}
	b.last = n
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / t.rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// enter counts one more request in flight for key unless limit are.
func (t *bucketTable) enter(key string, limit int) bool {
	i := t.slot(key)
	mu := &t.mu[i%len(t.mu)]
	mu.Lock()
	defer mu.Unlock()
	if t.b[i].inflight >= limit {
		return false
	}
	t.b[i].inflight++
	return true
}

func (t *bucketTable) leave(key string) {
	i := t.slot(key)
	mu := &t.mu[i%len(t.mu)]
	mu.Lock()
	t.b[i].inflight--
	mu.Unlock()
}

// retrySeconds is a Retry-After value: whole seconds, at least 1.
func retrySeconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

// GuardConfig bounds the token endpoint's password checks.
type GuardConfig struct {
	Concurrency       int           // AC_AUTH_CONCURRENCY: bcrypt checks at once
	ConcurrencySource int           // AC_AUTH_CONCURRENCY_PER_SOURCE: of which from one source IP
	QueueWait         time.Duration // AC_AUTH_QUEUE_WAIT: longest wait for a slot before 503
	SourceRate        float64       // AC_TOKEN_RATE_PER_SOURCE: requests per second per source IP (burst 2 s, ≥ 5)
	ClientRate        float64       // AC_TOKEN_RATE_PER_CLIENT: requests per second per client id (burst 2 s, ≥ 5)
	FailureLogEvery   time.Duration // AC_FAILURE_LOG_INTERVAL: refusals are logged as one summary per interval
}

// guard runs password checks within the bounds and counts refusals for the
// aggregated log.
type guard struct {
	cfg      GuardConfig
	slots    chan struct{}
	priority chan struct{} // one more slot for known-good (source, client) pairs
	trusted  *trustTable
	sources  *bucketTable
	clients  *bucketTable
	dummy    []byte       // bcrypt hash at the highest configured cost
	maxCost  int          // that cost
	maxCheck atomic.Int64 // nanoseconds a max-cost check takes (moving average)
	refused  [nRefusals]atomic.Int64
}

// Refusal reasons in the aggregated log (and the metric outcomes).
const (
	refusedInvalidClient = iota
	refusedUnknownClient // subset of invalid_client: the id is not configured
	refusedRateSource
	refusedRateClient
	refusedOverloaded
	nRefusals
)

var refusalNames = [nRefusals]string{"invalid_client", "unknown_client_id", "rate_limited_source", "rate_limited_client", "overloaded"}

func newGuard(cfg GuardConfig, clients map[string]Client) (*guard, error) {
	g := &guard{cfg: cfg, slots: make(chan struct{}, cfg.Concurrency), priority: make(chan struct{}, 1),
		trusted: &trustTable{seed: maphash.MakeSeed()},
		sources: newBucketTable(cfg.SourceRate, max(5, 2*cfg.SourceRate)),
		clients: newBucketTable(cfg.ClientRate, max(5, 2*cfg.ClientRate)),
		maxCost: bcrypt.MinCost}
	for _, c := range clients {
		cost, _ := bcrypt.Cost([]byte(c.SecretBcrypt))
		g.maxCost = max(g.maxCost, cost)
	}
	var err error
	if g.dummy, err = bcrypt.GenerateFromPassword([]byte("dark-tower-unknown-client"), g.maxCost); err != nil {
		return nil, err
	}
	start := time.Now()
	_ = bcrypt.CompareHashAndPassword(g.dummy, []byte("x"))
	g.maxCheck.Store(int64(time.Since(start)))
	return g, nil
}

// observeMax folds one max-cost check's duration into the average.
func (g *guard) observeMax(d time.Duration) {
	old := g.maxCheck.Load()
	g.maxCheck.Store(old + (int64(d)-old)/8)
}

// authenticate checks id/secret with the same work whatever the id: an
// unknown id is compared against a dummy hash at the highest configured
// cost, and a known id whose hash is cheaper waits out the difference, so
// the answer's timing does not tell which ids exist.
func (g *guard) authenticate(clients map[string]Client, id, secret string) (Client, bool) {
	c, known := clients[id]
	hash := []byte(c.SecretBcrypt)
	cost, _ := bcrypt.Cost(hash)
	if !known {
		hash, cost = g.dummy, g.maxCost
	}
	start := time.Now()
	err := bcrypt.CompareHashAndPassword(hash, []byte(secret))
	took := time.Since(start)
	if cost == g.maxCost {
		g.observeMax(took)
	} else if pad := time.Duration(g.maxCheck.Load()) - took; pad > 0 {
		time.Sleep(pad)
	}
	if !known {
		g.refused[refusedUnknownClient].Add(1)
	}
	return c, known && err == nil
}

// admit applies the rate limits and takes a check slot. It returns the
// HTTP status to refuse with (0: admitted; call the release function) and
// the Retry-After seconds.
func (g *guard) admit(ctx context.Context, source, clientID string) (code, retry int, release func()) {
	now := time.Now()
	if ok, wait := g.sources.take(source, now); !ok {
		g.refused[refusedRateSource].Add(1)
		return 429, retrySeconds(wait), nil
	}
	if ok, wait := g.clients.take(clientID, now); !ok {
		g.refused[refusedRateClient].Add(1)
		return 429, retrySeconds(wait), nil
	}
	if !g.sources.enter(source, g.cfg.ConcurrencySource) {
		g.refused[refusedOverloaded].Add(1)
		return 503, 1, nil
	}
	timer := time.NewTimer(g.cfg.QueueWait)
	defer timer.Stop()
	prio := g.priority
	if !g.trusted.has(source, clientID, now) {
		prio = nil // a nil channel never receives: only the shared slots
	}
	select {
	case g.slots <- struct{}{}:
		return 0, 0, func() { <-g.slots; g.sources.leave(source) }
	case prio <- struct{}{}:
		return 0, 0, func() { <-g.priority; g.sources.leave(source) }
	case <-timer.C:
	case <-ctx.Done():
	}
	g.sources.leave(source)
	g.refused[refusedOverloaded].Add(1)
	return 503, 1, nil
}

// trustTable remembers (source IP, client id) pairs that authenticated
// successfully in the last hour, in a fixed table (no memory per pair): a
// flood of wrong secrets from other sources cannot take every check slot
// from a client that already proved itself from its address.
type trustTable struct {
	seed maphash.Seed
	mu   sync.Mutex
	b    [4096]struct {
		h     uint64
		until int64
	}
}

const trustFor = time.Hour

func (t *trustTable) hash(source, clientID string) uint64 {
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(source)
	h.WriteByte(0)
	h.WriteString(clientID)
	return h.Sum64()
}

func (t *trustTable) add(source, clientID string, now time.Time) {
	h := t.hash(source, clientID)
	t.mu.Lock()
	t.b[h%uint64(len(t.b))] = struct {
		h     uint64
		until int64
	}{h, now.Add(trustFor).UnixNano()}
	t.mu.Unlock()
}

func (t *trustTable) has(source, clientID string, now time.Time) bool {
	h := t.hash(source, clientID)
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.b[h%uint64(len(t.b))]
	return e.h == h && e.until > now.UnixNano()
}

// logRefusals writes one summary line per interval with the refusals in it
// (nothing when there were none), instead of a line per failure.
func (g *guard) logRefusals(ctx context.Context, log *slog.Logger) {
	tick := time.NewTicker(g.cfg.FailureLogEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			g.flush(log)
			return
		case <-tick.C:
			g.flush(log)
		}
	}
}

func (g *guard) flush(log *slog.Logger) {
	attrs := []any{"interval", g.cfg.FailureLogEvery.String()}
	total := int64(0)
	for i := range g.refused {
		n := g.refused[i].Swap(0)
		if i != refusedUnknownClient {
			total += n
		}
		attrs = append(attrs, refusalNames[i], n)
	}
	if total > 0 {
		log.Warn("token requests refused", attrs...)
	}
}

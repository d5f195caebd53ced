package ac

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// writeClientsAt writes clients whose secrets are hashed at the given costs.
func writeClientsAt(t *testing.T, costs map[string]int) string {
	var f ClientsFile
	for id, cost := range costs {
		h, err := bcrypt.GenerateFromPassword([]byte(clientSecret), cost)
		if err != nil {
			t.Fatal(err)
		}
		f.Clients = append(f.Clients, Client{ID: id, SecretBcrypt: string(h), Audiences: []string{"global-controller"}})
	}
	b, _ := json.Marshal(f)
	path := filepath.Join(t.TempDir(), "clients.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// clientFrom is an HTTPS client whose connections come from a given
// loopback address (all of 127/8 is local on Linux): a distinct source.
func clientFrom(api *httptest.Server, ip string) *http.Client {
	tr := api.Client().Transport.(*http.Transport).Clone()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr.DialContext = d.DialContext
	tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	tr.TLSClientConfig.MinVersion = tls.VersionTLS12
	tr.MaxIdleConnsPerHost = 200
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type tokenAnswer struct {
	code       int
	retryAfter string
	took       time.Duration
}

func postToken(t *testing.T, c *http.Client, base, id, secret string) tokenAnswer {
	form := url.Values{"grant_type": {"client_credentials"}, "audience": {"global-controller"}}
	req, _ := http.NewRequest("POST", base+"/v1/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Error(err)
		return tokenAnswer{}
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return tokenAnswer{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), took: time.Since(start)}
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*q))]
}

// Finding 3: during a bounded wrong-secret flood (100 concurrent flooders
// from one source, 20 more from ten others), a legitimate client's token
// calls stay within budget and /ready stays fast; refusals are fast, carry
// Retry-After, and are logged as summaries rather than a line each.
// floodCost: bcrypt cost 8 takes about 160 ms under the race detector on
// the test machine (cost 10 about 640 ms).
const floodCost = 8

func TestTokenEndpointUnderWrongSecretFlood(t *testing.T) {
	guard := GuardConfig{Concurrency: 1, ConcurrencySource: 1, QueueWait: 200 * time.Millisecond,
		SourceRate: 5, ClientRate: 10, FailureLogEvery: time.Second}
	a := startAC(t, newDatabase(t), masterKey, func(c *Config) {
		c.ClientsFile = writeClientsAt(t, map[string]int{"meeting-controller": floodCost, "ops-tool": floodCost})
		c.Guard = guard
	})
	a.waitReady(t)
	legit := clientFrom(a.api, "127.0.0.1")
	readyz := httptest.NewServer(a.rdy)
	defer readyz.Close()

	// Baseline without a flood.
	var base []time.Duration
	for range 5 {
		ans := postToken(t, legit, a.api.URL, "meeting-controller", clientSecret)
		if ans.code != 200 {
			t.Fatalf("legitimate token = %d", ans.code)
		}
		base = append(base, ans.took)
	}

	const floodFor = 4 * time.Second
	stop := time.Now().Add(floodFor)
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	var refusalTimes []time.Duration
	var missingRetry atomic.Int64
	// Each flooder sends a request every 200 ms, or when the previous one
	// is answered if that takes longer: 120 flooders offer about 600
	// requests/s (bounded, so the test's own HTTP client does not starve
	// the two CPUs the service shares with it).
	flood := func(c *http.Client, id string) {
		for time.Now().Before(stop) {
			next := time.Now().Add(200 * time.Millisecond)
			ans := postToken(t, c, a.api.URL, id, "wrong-secret")
			time.Sleep(time.Until(next))
			mu.Lock()
			counts[ans.code]++
			if ans.code == 429 || ans.code == 503 {
				refusalTimes = append(refusalTimes, ans.took)
				if ans.retryAfter == "" {
					missingRetry.Add(1)
				}
			}
			mu.Unlock()
		}
	}
	heavy := clientFrom(a.api, "127.0.0.2")
	for i := range 100 {
		wg.Go(func() { flood(heavy, fmt.Sprintf("intruder-%d", i%7)) })
	}
	for i := range 10 {
		c := clientFrom(a.api, fmt.Sprintf("127.0.0.%d", 10+i))
		for range 2 {
			wg.Go(func() { flood(c, "ops-tool") })
		}
	}
	// The legitimate client and the probe, during the flood.
	var during, ready []time.Duration
	legitCodes := map[int]int{}
	time.Sleep(300 * time.Millisecond)
	for time.Now().Before(stop.Add(-300 * time.Millisecond)) {
		// Paced at 2 calls/s, well inside its source's 5/s: on an idle
		// machine an unpaced loop exceeds it and is (rightly) refused, and
		// at 4/s a starved test process (the suite's other packages share
		// the two CPUs) delivered two calls close enough together to be
		// refused too.
		next := time.Now().Add(500 * time.Millisecond)
		ans := postToken(t, legit, a.api.URL, "meeting-controller", clientSecret)
		legitCodes[ans.code]++
		during = append(during, ans.took)
		t0 := time.Now()
		resp, err := http.Get(readyz.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		ready = append(ready, time.Since(t0))
		if resp.StatusCode != 200 {
			t.Errorf("/ready = %d during the flood", resp.StatusCode)
		}
		time.Sleep(time.Until(next))
	}
	wg.Wait()
	time.Sleep(1500 * time.Millisecond) // one more summary interval
	lines := strings.Count(a.logs.String(), `"msg":"token requests refused"`)
	total := 0
	for _, n := range counts {
		total += n
	}
	t.Logf("FIGURE token flood (%s, bcrypt cost %d, 1 check slot): %d flood requests answered %v; refusals p50 %s p90 %s p99 %s",
		floodFor, floodCost, total, counts, quantile(refusalTimes, .5).Round(time.Millisecond),
		quantile(refusalTimes, .9).Round(time.Millisecond), quantile(refusalTimes, .99).Round(time.Millisecond))
	t.Logf("FIGURE legitimate client: before the flood p50 %s; during it %d calls %v, p50 %s, max %s; /ready max %s; %d summary log lines",
		quantile(base, .5).Round(time.Millisecond), len(during), legitCodes, quantile(during, .5).Round(time.Millisecond),
		slices.Max(during).Round(time.Millisecond), slices.Max(ready).Round(time.Millisecond), lines)
	if legitCodes[200] != len(during) {
		t.Errorf("the legitimate client was refused during the flood: %v", legitCodes)
	}
	// Budgets, on a 2-CPU machine shared with other builds and under the
	// race detector (the issue measured p50 2.8 s and /ready up to 1.95 s):
	// p50 under 600 ms, every call under 2 s; /ready under READY_CHECK_TIMEOUT's 1 s.
	if p := quantile(during, .5); p > 600*time.Millisecond {
		t.Errorf("legitimate token calls p50 %s during the flood (budget 600 ms)", p)
	}
	if m := slices.Max(during); m > 2*time.Second {
		t.Errorf("a legitimate token call took %s during the flood (budget 2 s)", m)
	}
	if m := slices.Max(ready); m > time.Second {
		t.Errorf("/ready took %s during the flood", m)
	}
	if counts[429] == 0 || counts[503]+counts[429] < total/2 {
		t.Errorf("the flood was not refused early: %v", counts)
	}
	if p50, p90 := quantile(refusalTimes, .5), quantile(refusalTimes, .9); p50 > 100*time.Millisecond || p90 > 400*time.Millisecond {
		t.Errorf("refusals p50 %s, p90 %s: not fast", p50, p90)
	}
	if n := missingRetry.Load(); n > 0 {
		t.Errorf("%d refusals without Retry-After", n)
	}
	if lines == 0 || lines > int(floodFor/time.Second)+3 {
		t.Errorf("%d refusal log lines for %d refused requests, want one summary per second", lines, total)
	}
	if strings.Contains(a.logs.String(), "wrong-secret") || strings.Contains(a.logs.String(), clientSecret) {
		t.Error("a secret was logged")
	}
}

// Finding 7: the time to refuse does not depend on whether the id exists,
// whatever the stored hashes' costs.
func TestUnknownAndKnownIDsCostTheSame(t *testing.T) {
	a := startAC(t, newDatabase(t), masterKey, func(c *Config) {
		c.ClientsFile = writeClientsAt(t, map[string]int{"cheap": bcrypt.MinCost, "dear": floodCost})
	})
	a.waitReady(t)
	c := clientFrom(a.api, "127.0.0.1")
	// Round-robin, not one id after another: a change in the machine's
	// load (the suite runs beside a real cluster) then weighs on every id
	// alike instead of on whichever was being measured (CI once saw the
	// first id at 1.76× the last when measured in blocks).
	ids := []string{"cheap", "dear", "no-such-client"}
	took := map[string][]time.Duration{}
	for range 9 {
		for _, id := range ids {
			ans := postToken(t, c, a.api.URL, id, "wrong-secret")
			if ans.code != 401 {
				t.Fatalf("%s: %d", id, ans.code)
			}
			took[id] = append(took[id], ans.took)
		}
	}
	med := map[string]time.Duration{}
	for _, id := range ids {
		med[id] = quantile(took[id], .5)
	}
	t.Logf("FIGURE wrong-secret median: cost-%d id %s, cost-%d id %s, unknown id %s",
		bcrypt.MinCost, med["cheap"], floodCost, med["dear"], med["no-such-client"])
	for _, id := range []string{"cheap", "dear"} {
		// Before the fix the cost-4 id answered in about 1/70 of the
		// unknown id's time; the bound leaves room for a loaded machine.
		if r := float64(med[id]) / float64(med["no-such-client"]); r < 0.6 || r > 1.67 {
			t.Errorf("%s takes %.2f× an unknown id: ids are enumerable by timing", id, r)
		}
	}
}

func TestRateLimitsAnswer429WithRetryAfter(t *testing.T) {
	a := startAC(t, newDatabase(t), masterKey, func(c *Config) {
		c.Guard = GuardConfig{Concurrency: 2, ConcurrencySource: 2, QueueWait: time.Second, SourceRate: 1, ClientRate: 1000,
			FailureLogEvery: time.Second}
	})
	a.waitReady(t)
	c := clientFrom(a.api, "127.0.0.3")
	var codes []int
	for range 7 {
		ans := postToken(t, c, a.api.URL, "meeting-controller", clientSecret)
		codes = append(codes, ans.code)
		if ans.code == 429 && ans.retryAfter != "1" {
			t.Errorf("Retry-After = %q", ans.retryAfter)
		}
	}
	// Burst of 5, then refused; another source is unaffected.
	if !slices.Equal(codes, []int{200, 200, 200, 200, 200, 429, 429}) {
		t.Fatalf("codes = %v", codes)
	}
	if ans := postToken(t, clientFrom(a.api, "127.0.0.4"), a.api.URL, "meeting-controller", clientSecret); ans.code != 200 {
		t.Fatalf("another source = %d", ans.code)
	}
	// Per client id: many sources cannot get more than the client's rate.
	b := startAC(t, newDatabase(t), masterKey, func(c *Config) {
		c.Guard = GuardConfig{Concurrency: 2, ConcurrencySource: 2, QueueWait: time.Second, SourceRate: 1000, ClientRate: 1,
			FailureLogEvery: time.Second}
	})
	b.waitReady(t)
	got429 := false
	for i := range 7 {
		if postToken(t, clientFrom(b.api, fmt.Sprintf("127.0.7.%d", i+1)), b.api.URL, "ops-tool", "wrong").code == 429 {
			got429 = true
		}
	}
	if !got429 {
		t.Fatal("per-client rate limit not applied across sources")
	}
	_ = context.Background
}

// Command flagload is the client side of the flag benchmark
// (bench/flagbench, `make bench-flags`): it connects N real flag clients
// (internal/flags) to a gateway, writes a flag in etcd W times and
// measures, per write, when each client holds the new value. It prints one
// JSON object (latencies in microseconds, memory in bytes) on stdout.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/darktower/delivery/services/internal/flags"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Result is what the benchmark reads.
type Result struct {
	Clients int `json:"clients"`
	Writes  int `json:"writes"`
	// Per write and client, from the start of the etcd put (the commit
	// included) and from its acknowledgement (gateway and push only).
	FromWriteUS []int64 `json:"from_write_us"`
	FromAckUS   []int64 `json:"from_ack_us"`
	// Per write, until the last of the N clients held the value.
	AllClientsUS []int64 `json:"all_clients_us"`
	ConnectMS    int64   `json:"connect_ms"`
	// Memory: the gateway's (from its /metrics) and this process's heap,
	// before and after the N clients connected.
	GatewayHeapPerSub float64 `json:"gateway_heap_per_subscriber"`
	GatewayRSSPerSub  float64 `json:"gateway_rss_per_subscriber"`
	ClientHeapPerSub  float64 `json:"client_heap_per_subscriber"`
}

func main() {
	url := flag.String("url", "", "the gateway's watch URL, wss://host:port"+flags.WatchPath)
	metrics := flag.String("metrics", "", "the gateway's /metrics URL (memory per subscriber)")
	ca := flag.String("ca", "", "PEM CA file the gateway's certificate is issued by")
	etcd := flag.String("etcd", "", "etcd endpoint the writes go to")
	prefix := flag.String("prefix", "/darktower/flags/", "the gateway's FLAGS_PREFIX")
	n := flag.Int("clients", 1, "flag clients to connect")
	writes := flag.Int("writes", 50, "etcd writes to measure")
	gap := flag.Duration("interval", 20*time.Millisecond, "pause between writes")
	flag.Parse()
	if *url == "" || *etcd == "" || *ca == "" {
		fmt.Fprintln(os.Stderr, "flagload needs --url, --ca and --etcd (bench/flagbench runs it)")
		os.Exit(2)
	}
	r, err := run(*url, *metrics, *ca, *etcd, *prefix, *n, *writes, *gap)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flagload:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

type tracker struct {
	mu      sync.Mutex
	want    string
	arrived []time.Time // per client: when it held want (zero: not yet)
	left    int
	done    chan struct{}
}

func run(url, metricsURL, caFile, endpoint, prefix string, n, writes int, gap time.Duration) (*Result, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	const flag = flags.AcTokenTtlSeconds
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := cli.Put(ctx, prefix+flag, "60"); err != nil {
		return nil, fmt.Errorf("etcd %s: %w", endpoint, err)
	}

	tr := &tracker{arrived: make([]time.Time, n)}
	heapBefore := heap()
	gwHeap0, gwRSS0 := gatewayMemory(metricsURL)
	hc := flags.HTTPClient(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	clients := make([]*flags.Client, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		clients[i] = flags.New(flags.Options{URL: url, HTTPClient: hc, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
			OnChange: func(name string, v flags.Value, _ flags.Source, _ int64) {
				if name != flag {
					return
				}
				now := time.Now()
				tr.mu.Lock()
				if v.Raw == tr.want && tr.arrived[i].IsZero() {
					tr.arrived[i] = now
					if tr.left--; tr.left == 0 {
						close(tr.done)
					}
				}
				tr.mu.Unlock()
			}})
		wg.Add(1)
		go func() { defer wg.Done(); _ = clients[i].Run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()
	for _, c := range clients {
		for c.Int(flag) != 60 {
			if time.Since(start) > 2*time.Minute {
				return nil, fmt.Errorf("not every client connected within 2 min")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	res := &Result{Clients: n, Writes: writes, ConnectMS: time.Since(start).Milliseconds()}
	res.ClientHeapPerSub = (heap() - heapBefore) / float64(n)
	gwHeap1, gwRSS1 := gatewayMemory(metricsURL)
	res.GatewayHeapPerSub = (gwHeap1 - gwHeap0) / float64(n)
	res.GatewayRSSPerSub = (gwRSS1 - gwRSS0) / float64(n)

	for w := range writes {
		v := strconv.Itoa(61 + w%800) // within the flag's 60..900
		tr.mu.Lock()
		tr.want, tr.left, tr.done = v, n, make(chan struct{})
		clear(tr.arrived)
		done := tr.done
		tr.mu.Unlock()
		t0 := time.Now()
		if _, err := cli.Put(ctx, prefix+flag, v); err != nil {
			return nil, err
		}
		ack := time.Now()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("write %d: not every client held %s within 30 s", w, v)
		}
		tr.mu.Lock()
		var last time.Time
		for _, at := range tr.arrived {
			res.FromWriteUS = append(res.FromWriteUS, at.Sub(t0).Microseconds())
			res.FromAckUS = append(res.FromAckUS, max(0, at.Sub(ack).Microseconds()))
			if at.After(last) {
				last = at
			}
		}
		tr.mu.Unlock()
		res.AllClientsUS = append(res.AllClientsUS, last.Sub(t0).Microseconds())
		time.Sleep(gap)
	}
	for _, s := range [][]int64{res.FromWriteUS, res.FromAckUS, res.AllClientsUS} {
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	}
	return res, nil
}

func heap() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc)
}

// gatewayMemory reads go_memstats_heap_inuse_bytes and
// process_resident_memory_bytes from the gateway's /metrics.
func gatewayMemory(url string) (heapInuse, rss float64) {
	if url == "" {
		return 0, 0
	}
	resp, err := http.Get(url)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "go_memstats_heap_inuse_bytes":
			heapInuse = v
		case "process_resident_memory_bytes":
			rss = v
		}
	}
	return heapInuse, rss
}

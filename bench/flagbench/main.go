// Command flagbench is `make bench-flags`: the flag system's propagation
// latency, from an etcd write to the value held by N subscribed clients,
// over loopback, for N = 1, 100 and 1000, with p50/p99/max and memory per
// subscriber. Everything is real: etcd built from the Go module proxy
// (pipelines/upstream, cached), the flag-gateway binary over TLS
// (services/cmd/flag-gateway) and N clients of services/internal/flags in
// one load process (services/internal/flaggw/flagload).
//
//	go run ./bench/flagbench [--clients 1,100,1000] [--writes 200]
//
// Latency "from write" starts when the etcd put is sent (its commit and
// fsync included); "from ack" when etcd acknowledged it (the gateway and
// the push alone). "all N" is, per write, until the last of the N clients
// held the value. The goal (ADR-0012 §10 asks < 100 ms) is p99 ≤ 10 ms at
// 100 subscribers.
//
// --smoke (the test command runs it): N = 1 and 10, 10 writes; it checks
// that the benchmark works, its figures are not figures.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/darktower/delivery/pipelines/upstream"
)

const prefix = "/darktower/flags/bench/"

type result struct {
	Clients           int     `json:"clients"`
	Writes            int     `json:"writes"`
	FromWriteUS       []int64 `json:"from_write_us"`
	FromAckUS         []int64 `json:"from_ack_us"`
	AllClientsUS      []int64 `json:"all_clients_us"`
	ConnectMS         int64   `json:"connect_ms"`
	GatewayHeapPerSub float64 `json:"gateway_heap_per_subscriber"`
	GatewayRSSPerSub  float64 `json:"gateway_rss_per_subscriber"`
	ClientHeapPerSub  float64 `json:"client_heap_per_subscriber"`
}

func main() {
	clients := flag.String("clients", "1,100,1000", "subscriber counts to measure, comma-separated")
	writes := flag.Int("writes", 200, "etcd writes measured per subscriber count")
	smoke := flag.Bool("smoke", false, "N = 1 and 10, 10 writes: checks that the benchmark runs (its numbers are not figures)")
	keep := flag.Bool("keep", false, "keep the work directory (etcd's and the gateway's logs)")
	flag.Parse()
	counts := []int{}
	for _, s := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench-flags: --clients %q: expected positive counts, e.g. 1,100,1000\n", *clients)
			os.Exit(2)
		}
		counts = append(counts, n)
	}
	if *smoke {
		counts, *writes = []int{1, 10}, 10
	}
	if err := run(counts, *writes, *smoke, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench-flags:", err)
		os.Exit(1)
	}
}

func run(counts []int, writes int, smoke, keep bool) error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "flagbench-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("work directory:", work)
	} else {
		defer os.RemoveAll(work)
	}
	etcdBin, err := upstream.EtcdProgram.Build(ctx, upstream.DefaultCacheDir(), os.Stderr)
	if err != nil {
		return err
	}
	// The two binaries are built like the services (CGO off, trimmed),
	// with the machine's Go build cache.
	bin := filepath.Join(work, "bin")
	build := exec.Command("go", "build", "-trimpath", "-o", bin+"/", "./cmd/flag-gateway", "./internal/flaggw/flagload")
	build.Dir = "services"
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the gateway and the load generator (run from the repository root): %w", err)
	}
	ca, cert, key, err := writeTLS(work)
	if err != nil {
		return err
	}

	etcdURL := "http://127.0.0.1:" + freePort()
	peer := "http://127.0.0.1:" + freePort()
	etcd, err := start(filepath.Join(work, "etcd.log"), nil, etcdBin.Binary, "--data-dir", filepath.Join(work, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default="+peer, "--log-level", "warn")
	if err != nil {
		return err
	}
	defer stop(etcd)
	if err := waitHTTP(etcdURL+"/health", 30*time.Second); err != nil {
		return fmt.Errorf("etcd: %w (log: %s)", err, filepath.Join(work, "etcd.log"))
	}

	ops, api := "127.0.0.1:"+freePort(), "127.0.0.1:"+freePort()
	gw, err := start(filepath.Join(work, "gateway.log"), []string{"OPS_ADDR=" + ops, "API_ADDR=" + api,
		"TLS_CERT_FILE=" + cert, "TLS_KEY_FILE=" + key, "FLAGS_ETCD_ENDPOINTS=" + etcdURL, "FLAGS_PREFIX=" + prefix,
		"SHUTDOWN_DELAY=0s", "API_MAX_CONNS_PER_SOURCE=100000", "LOG_LEVEL=warn",
		// No AC here: subscribers are not authenticated. The token is
		// checked once per subscription, not per push, so propagation
		// is measured on the same path.
		"FLAGS_INSECURE_NO_AUTH=true"}, filepath.Join(bin, "flag-gateway"))
	if err != nil {
		return err
	}
	defer stop(gw)
	if err := waitHTTP("http://"+ops+"/ready", 30*time.Second); err != nil {
		return fmt.Errorf("flag-gateway: %w (log: %s)", err, filepath.Join(work, "gateway.log"))
	}

	if smoke {
		fmt.Println("SMOKE RUN (--smoke): N = 1 and 10, 10 writes; it checks that the benchmark works, its numbers are not figures")
	}
	fmt.Printf("flag propagation over loopback: etcd %s, flag-gateway (TLS WebSocket), N flags clients in one process; %d writes per N; %d CPUs (GOMAXPROCS %d)\n",
		upstream.Versions.Etcd, writes, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	fmt.Printf("%6s  %-26s  %-26s  %-26s  %10s  %12s  %12s  %12s\n", "N", "from write p50/p99/max", "from ack p50/p99/max",
		"all N p50/p99/max", "connect", "gw heap/sub", "gw RSS/sub", "client/sub")
	var at100 *result
	for _, n := range counts {
		var out bytes.Buffer
		load := exec.Command(filepath.Join(bin, "flagload"), "--url", "wss://"+api+"/v1/flags/watch", "--metrics", "http://"+ops+"/metrics",
			"--ca", ca, "--etcd", etcdURL, "--prefix", prefix, "--clients", strconv.Itoa(n), "--writes", strconv.Itoa(writes))
		load.Stdout, load.Stderr = &out, os.Stderr
		if err := load.Run(); err != nil {
			return fmt.Errorf("flagload --clients %d: %w", n, err)
		}
		var r result
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			return fmt.Errorf("flagload --clients %d printed %q: %w", n, out.String(), err)
		}
		if len(r.FromWriteUS) != n*writes || len(r.AllClientsUS) != writes {
			return fmt.Errorf("flagload --clients %d: %d samples, want %d", n, len(r.FromWriteUS), n*writes)
		}
		fmt.Printf("%6d  %-26s  %-26s  %-26s  %10s  %12s  %12s  %12s\n", n, triple(r.FromWriteUS), triple(r.FromAckUS), triple(r.AllClientsUS),
			(time.Duration(r.ConnectMS) * time.Millisecond).String(), kib(r.GatewayHeapPerSub), kib(r.GatewayRSSPerSub), kib(r.ClientHeapPerSub))
		if n == 100 {
			at100 = &r
		}
	}
	fmt.Println("from write: etcd put sent → a client holds the value (per client); from ack: put acknowledged → held; all N: put sent → the last client holds it (per write)")
	fmt.Println("memory: gateway heap in use and RSS (its /metrics) and the load process's heap, growth while the N clients connected, divided by N")
	if at100 != nil && !smoke {
		p99 := time.Duration(pct(at100.FromWriteUS, .99)) * time.Microsecond
		verdict := "met"
		if p99 > 10*time.Millisecond {
			verdict = "NOT met"
		}
		fmt.Printf("goal p99 ≤ 10 ms at 100 subscribers (from write): %s (p99 %s)\n", verdict, p99)
	}
	return nil
}

func triple(us []int64) string {
	f := func(p float64) string {
		return (time.Duration(pct(us, p)) * time.Microsecond).Round(10 * time.Microsecond).String()
	}
	return f(.5) + " / " + f(.99) + " / " + f(1)
}

// pct is the p-th value of sorted samples (nearest rank).
func pct(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p+0.5)]
}

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func start(logPath string, env []string, name string, args ...string) (*exec.Cmd, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return cmd, nil
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func waitHTTP(url string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeTLS makes a throwaway CA and a certificate for 127.0.0.1.
func writeTLS(dir string) (ca, cert, key string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flagbench-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", "", err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "flag-gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		return "", "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", "", "", err
	}
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{ca, "CERTIFICATE", caDER}, {cert, "CERTIFICATE", der}, {key, "PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return "", "", "", err
		}
	}
	return ca, cert, key, nil
}

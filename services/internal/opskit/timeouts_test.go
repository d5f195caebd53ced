package opskit

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// bodyService reads request bodies whole.
type bodyService struct{ testService }

func (s *bodyService) Routes(mux *Mux) {
	mux.HandleFunc("POST /v1/upload", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "body", http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d bytes", len(b))
	})
}

func startBounded(t *testing.T, c Common) *Server {
	t.Helper()
	var logs bytes.Buffer
	c.Service, c.OpsAddr, c.APIAddr, c.DevSelfSignedTLS = "test", "127.0.0.1:0", "127.0.0.1:0", true
	c.ShutdownGrace, c.ReadyTimeout = 5*time.Second, time.Second
	kit, err := NewKit(c, &logs)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(c, kit, &bodyService{testService{healthy: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv
}

func dialTLS(addr string, from string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
}

// Finding 6: connections dribbling a body (or headers) a byte at a time are
// closed once API_READ_TIMEOUT has passed, instead of being held forever.
func TestSlowDribblingConnectionsAreClosed(t *testing.T) {
	const readTimeout = 2 * time.Second
	srv := startBounded(t, Common{APIReadTimeout: readTimeout})
	addr := srv.APIAddr().String()
	const n = 40
	closedAfter := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := dialTLS(addr, "127.0.0.1")
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			start := time.Now()
			if i%2 == 0 { // slow body
				fmt.Fprintf(c, "POST /v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
			} else { // slow headers
				fmt.Fprintf(c, "POST /v1/upload HTTP/1.1\r\n")
			}
			// Dribble a byte every 300 ms for at most 10 s, reading between.
			buf := make([]byte, 4096)
			for time.Since(start) < 10*time.Second {
				if _, err := c.Write([]byte("a")); err != nil {
					break
				}
				_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if _, err := c.Read(buf); err != nil && !errors.Is(err, context.DeadlineExceeded) {
					var ne net.Error
					if !(errors.As(err, &ne) && ne.Timeout()) {
						break // EOF or reset: the server closed it
					}
				}
			}
			closedAfter[i] = time.Since(start)
		})
	}
	wg.Wait()
	worst := time.Duration(0)
	for _, d := range closedAfter {
		worst = max(worst, d)
	}
	t.Logf("FIGURE slow dribble: %d TLS connections (half slow body, half slow headers), API_READ_TIMEOUT %s: all closed, the last after %s",
		n, readTimeout, worst.Round(time.Millisecond))
	if worst > readTimeout+1500*time.Millisecond {
		t.Fatalf("a dribbling connection stayed open %s (read timeout %s)", worst, readTimeout)
	}
	// A normal request still works.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 5 * time.Second}
	resp, err := c.Post("https://"+addr+"/v1/upload", "text/plain", bytes.NewReader([]byte("hello")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "5 bytes" {
		t.Fatalf("normal request: %d %q", resp.StatusCode, b)
	}
}

func TestConnectionsPerSourceAreCapped(t *testing.T) {
	srv := startBounded(t, Common{APIMaxConnsPerSrc: 5})
	addr := srv.APIAddr().String()
	var held []*tls.Conn
	refused := 0
	for range 8 {
		c, err := dialTLS(addr, "127.0.0.1")
		if err != nil {
			refused++
			continue
		}
		held = append(held, c)
	}
	if len(held) != 5 || refused != 3 {
		t.Fatalf("%d connections completed TLS, %d refused; want 5 and 3", len(held), refused)
	}
	// Another source is not affected; closing one frees a place.
	other, err := dialTLS(addr, "127.0.0.2")
	if err != nil {
		t.Fatalf("another source refused: %v", err)
	}
	other.Close()
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dialTLS(addr, "127.0.0.1")
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no place after closing a connection: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range held[1:] {
		c.Close()
	}
	if v := testutil.ToFloat64(srv.apiLn.(*sourceLimitListener).rejected); v < 3 {
		t.Fatalf("api_connections_rejected_total = %g", v)
	}
}

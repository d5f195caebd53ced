package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A TCP server that greets and a UDP echo are reached; a closed TCP port
// and a silent UDP port are not.
func TestReachJudgesTCPAndUDP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "hello")
			c.Close()
		}
	}()
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], from)
		}
	}()
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	if err := reachTCP(l.Addr().String(), time.Second); err != nil {
		t.Errorf("open TCP: %v", err)
	}
	if err := reachUDP(echo.LocalAddr().String(), time.Second); err != nil {
		t.Errorf("UDP echo: %v", err)
	}
	if err := reachTCP(closedAddr, 500*time.Millisecond); err == nil {
		t.Error("closed TCP port judged reachable")
	}
	if err := reachUDP(silent.LocalAddr().String(), 500*time.Millisecond); err == nil {
		t.Error("silent UDP port judged reachable")
	}
}

// http reports any status code (judging it is the caller's); only no
// answer within the timeout is an error.
func TestHTTPStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(time.Second)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	if code, err := status("GET", srv.URL+"/ready", time.Second); err != nil || code != 503 {
		t.Errorf("GET /ready: %d %v", code, err)
	}
	if _, err := status("GET", srv.URL+"/slow", 100*time.Millisecond); err == nil {
		t.Error("a request slower than the timeout answered")
	}
}

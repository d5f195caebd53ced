package main

import (
	"fmt"
	"net"
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

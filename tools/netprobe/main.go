// Command netprobe is the real cluster's probe: run in a pod, it listens on
// the ports the services use (serve) or tries to reach one (connect), so
// that NetworkPolicies can be judged on real packets. UDP is judged by an
// echo: a datagram that comes back proves both directions passed.
//
//	netprobe serve --tcp 443,8080,5432,6379 --udp 443
//	netprobe connect --tcp 10.244.0.7:443 --timeout 2s      exit 0 reached, 1 not
//	netprobe connect --udp 10.244.0.7:443 --timeout 2s
//	netprobe matrix --timeout 2s tcp/10.244.0.7:443 udp/10.244.0.7:443 ...
//	                                          one line per target: "<target> ok", "<target> blocked",
//	                                          or "<target> error: …" (a malformed target: never a verdict)
//	netprobe http --timeout 3s [--method GET|POST] URL       prints the response's status code, exit 0;
//	                                          no response within the timeout: exit 1 and why (the chaos
//	                                          executor's httpProbe: the code is judged by the caller)
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: netprobe serve --tcp PORTS --udp PORTS | netprobe connect --tcp|--udp HOST:PORT [--timeout D]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "connect":
		err = connect(os.Args[2:])
	case "matrix":
		err = matrix(os.Args[2:])
	case "http":
		err = httpStatus(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netprobe:", err)
		os.Exit(1)
	}
}

func ports(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("bad port %q", p)
		}
		out = append(out, n)
	}
	return out, nil
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	tcp := fs.String("tcp", "", "comma-separated TCP ports to accept on")
	udp := fs.String("udp", "", "comma-separated UDP ports to echo on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tcpPorts, err := ports(*tcp)
	if err != nil {
		return err
	}
	udpPorts, err := ports(*udp)
	if err != nil {
		return err
	}
	for _, p := range tcpPorts {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				// A line identifies the server; then the connection closes.
				fmt.Fprintf(c, "netprobe %s\n", l.Addr())
				c.Close()
			}
		}()
	}
	for _, p := range udpPorts {
		c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", p))
		if err != nil {
			return err
		}
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				c.WriteTo(buf[:n], from)
			}
		}()
	}
	fmt.Printf("netprobe: serving tcp %v udp %v\n", tcpPorts, udpPorts)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

func connect(args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	tcp := fs.String("tcp", "", "HOST:PORT to open a TCP connection to")
	udp := fs.String("udp", "", "HOST:PORT to send a datagram to and expect it echoed")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *tcp != "":
		return reachTCP(*tcp, *timeout)
	case *udp != "":
		return reachUDP(*udp, *timeout)
	}
	return errors.New("connect needs --tcp or --udp")
}

// matrix tries every target at once and reports each.
func matrix(args []string) error {
	fs := flag.NewFlagSet("matrix", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 2*time.Second, "give up on a target after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	results := make([]string, fs.NArg())
	var wg sync.WaitGroup
	for i, target := range fs.Args() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			proto, addr, ok := strings.Cut(target, "/")
			host, _, splitErr := net.SplitHostPort(addr)
			var err error
			switch {
			case !ok || splitErr != nil || host == "":
				results[i] = target + " error: not proto/host:port"
				return
			case proto == "tcp":
				err = reachTCP(addr, *timeout)
			case proto == "udp":
				err = reachUDP(addr, *timeout)
			default:
				results[i] = target + " error: unknown protocol " + proto
				return
			}
			results[i] = target + " ok"
			if err != nil {
				results[i] = target + " blocked"
			}
		}()
	}
	wg.Wait()
	for _, r := range results {
		fmt.Println(r)
	}
	return nil
}

func reachTCP(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	// The server's greeting proves the connection was accepted, not just
	// half-open.
	if _, err := c.Read(make([]byte, 128)); err != nil {
		return fmt.Errorf("connected to %s but read nothing: %w", addr, err)
	}
	return nil
}

func reachUDP(addr string, timeout time.Duration) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	msg := []byte("netprobe " + strconv.FormatInt(time.Now().UnixNano(), 10))
	buf := make([]byte, 1500)
	// Resend every 200 ms: a datagram may be lost while conntrack settles.
	for time.Now().Before(deadline) {
		if _, err := c.Write(msg); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) == string(msg) {
			return nil
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
	}
	return fmt.Errorf("no echo from %s within %s", addr, timeout)
}

// httpStatus makes one request and prints its status code, whatever it
// is: only "no answer" is an error here, as in Litmus's httpProbe, where
// the code is then compared with the probe's criteria.
func httpStatus(args []string) error {
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 3*time.Second, "the whole request's bound (the probe's probeTimeout)")
	method := fs.String("method", "GET", "GET or POST")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("http needs exactly one URL")
	}
	if *method != "GET" && *method != "POST" {
		return fmt.Errorf("http: method %q: GET or POST", *method)
	}
	code, err := status(*method, fs.Arg(0), *timeout)
	if err != nil {
		return err
	}
	fmt.Println(code)
	return nil
}

func status(method, url string, timeout time.Duration) (int, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return resp.StatusCode, nil
}

package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// EtcdEnv names the etcd binary the tests run: the one the pipeline builds
// from the Go module proxy (pipelines/upstream), whose path the root CLI
// prints. scripts/test.sh sets it.
const EtcdEnv = "DARKTOWER_ETCD"

// Etcd is a throwaway single-member etcd on loopback. Stop and Start keep
// its data and ports, so a test can take it away and bring it back.
type Etcd struct {
	ClientPort, PeerPort int
	bin, base            string
	proc                 *process
}

// Endpoint is the client URL.
func (e *Etcd) Endpoint() string { return "http://127.0.0.1:" + strconv.Itoa(e.ClientPort) }

// EtcdBinary returns $DARKTOWER_ETCD, or an error saying how to set it.
func EtcdBinary() (string, error) {
	bin := os.Getenv(EtcdEnv)
	if bin == "" {
		return "", errors.New(EtcdEnv + " is not set: these tests run a real etcd. From the repository root: " +
			"export " + EtcdEnv + "=$(go run . tools-path etcd)   (builds etcd from the Go module proxy once; scripts/test.sh does this)")
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s=%s: %w (rebuild it: export %s=$(go run . tools-path etcd) from the repository root)", EtcdEnv, bin, err, EtcdEnv)
	}
	return bin, nil
}

// StartEtcd starts etcd on free ports in a temporary directory.
func StartEtcd() (*Etcd, error) {
	bin, err := EtcdBinary()
	if err != nil {
		return nil, err
	}
	base, err := os.MkdirTemp("", "dt-etcd-")
	if err != nil {
		return nil, err
	}
	e := &Etcd{bin: bin, base: base}
	if e.ClientPort, err = FreePort(); err == nil {
		e.PeerPort, err = FreePort()
	}
	if err == nil {
		err = e.Start()
	}
	if err != nil {
		os.RemoveAll(base)
		return nil, err
	}
	return e, nil
}

// Start (re)starts the member on its ports and data directory and waits
// until it serves.
func (e *Etcd) Start() error {
	client := "http://127.0.0.1:" + strconv.Itoa(e.ClientPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(e.PeerPort)
	var err error
	e.proc, err = startProcess(filepath.Join(e.base, "etcd.log"), nil, e.bin,
		"--name", "default", "--data-dir", filepath.Join(e.base, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer, "--log-level", "warn")
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 500 * time.Millisecond}
	err = e.proc.waitUntil(30*time.Second, func() error {
		resp, err := hc.Get(client + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/health: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		e.proc.stop(syscall.SIGKILL, time.Second)
	}
	return err
}

// Stop shuts the member down, keeping its data (Start brings it back).
func (e *Etcd) Stop() {
	if e.proc != nil {
		e.proc.stop(syscall.SIGTERM, 10*time.Second)
	}
}

// Kill stops the member abruptly, keeping its data.
func (e *Etcd) Kill() {
	if e.proc != nil {
		e.proc.stop(syscall.SIGKILL, 5*time.Second)
	}
}

// Close stops the member and removes its files.
func (e *Etcd) Close() {
	e.Stop()
	os.RemoveAll(e.base)
}

// Reachable reports whether something accepts connections on the client port.
func (e *Etcd) Reachable() bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(e.ClientPort), 200*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err == nil
}

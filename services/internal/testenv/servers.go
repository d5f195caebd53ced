// Package testenv starts the real servers tests need (PostgreSQL, Redis) on
// loopback from the machine's Debian packages, and makes TLS material. The
// README's test command installs the packages; nothing here is a mock.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is a server child with its log file.
type process struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

func startProcess(logPath string, cred *syscall.Credential, name string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.exited) }()
	return p, nil
}

// stop sends sig and waits for exit (SIGKILL after timeout).
func (p *process) stop(sig syscall.Signal, timeout time.Duration) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *process) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// waitUntil polls ready until it succeeds, the process exits or timeout.
func (p *process) waitUntil(timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited during start-up:\n%s", filepath.Base(p.cmd.Path), p.logTail())
		default:
		}
		if err = ready(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s (%v):\n%s", filepath.Base(p.cmd.Path), timeout, err, p.logTail())
}

// Postgres is a throwaway PostgreSQL cluster on 127.0.0.1.
type Postgres struct {
	Port     int
	Password string
	base     string
	proc     *process
}

// pgBinDir finds the server binaries: $DT_PG_BINDIR, Debian's
// /usr/lib/postgresql/<major>/bin (newest), or PATH.
func pgBinDir() (string, error) {
	if d := os.Getenv("DT_PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries not found: install Debian's postgresql package (the README's test command does) or set DT_PG_BINDIR")
}

func majorOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// unprivileged returns the credential servers that refuse root run under.
func unprivileged() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root and neither user postgres nor nobody exists to run PostgreSQL")
}

// StartPostgres initialises and starts a cluster with password
// (SCRAM-SHA-256) authentication for user "postgres".
func StartPostgres() (*Postgres, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := unprivileged()
	if err != nil {
		return nil, err
	}
	base, err := os.MkdirTemp("", "dt-pg-")
	if err != nil {
		return nil, err
	}
	pg := &Postgres{base: base, Password: "pg-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	fail := func(err error) (*Postgres, error) { os.RemoveAll(base); return nil, err }
	data := filepath.Join(base, "data")
	pwfile := filepath.Join(base, "pwfile")
	if err := os.Chmod(base, 0o755); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(pwfile, []byte(pg.Password+"\n"), 0o600); err != nil {
		return fail(err)
	}
	if err := os.Mkdir(data, 0o700); err != nil {
		return fail(err)
	}
	if cred != nil {
		for _, p := range []string{data, pwfile} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return fail(err)
			}
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--auth=scram-sha-256", "--pwfile="+pwfile, "--encoding=UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w\n%s", err, out))
	}
	if pg.Port, err = FreePort(); err != nil {
		return fail(err)
	}
	pg.proc, err = startProcess(filepath.Join(base, "postgres.log"), cred, filepath.Join(bin, "postgres"),
		"-D", data, "-p", strconv.Itoa(pg.Port), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200")
	if err != nil {
		return fail(err)
	}
	err = pg.proc.waitUntil(30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pg.URL("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
	if err != nil {
		pg.Stop()
		return nil, err
	}
	return pg, nil
}

// URL is a connection URL for database db as user postgres.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/%s?sslmode=disable", p.Password, p.Port, db)
}

// CreateDatabase creates a fresh database and returns its URL.
func (p *Postgres) CreateDatabase(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	return p.URL(name), nil
}

// Freeze stops every PostgreSQL process (SIGSTOP to the postmaster, then
// to its children, which run in sessions of their own): connections stay
// open and nothing answers, as with a hung server.
func (p *Postgres) Freeze() error {
	pid := p.proc.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return err
	}
	for _, c := range childrenOf(pid) {
		_ = syscall.Kill(c, syscall.SIGSTOP)
	}
	return nil
}

// Thaw resumes a frozen PostgreSQL.
func (p *Postgres) Thaw() error {
	pid := p.proc.cmd.Process.Pid
	for _, c := range childrenOf(pid) {
		_ = syscall.Kill(c, syscall.SIGCONT)
	}
	return syscall.Kill(pid, syscall.SIGCONT)
}

// childrenOf lists the processes whose parent is pid (from /proc).
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if f := strings.Fields(string(stat[i+1:])); i > 0 && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, n)
		}
	}
	return kids
}

// Stop shuts PostgreSQL down (fast mode) and removes its files.
func (p *Postgres) Stop() {
	if p.proc != nil {
		p.proc.stop(syscall.SIGINT, 10*time.Second)
	}
	os.RemoveAll(p.base)
}

// Redis is a throwaway redis-server on 127.0.0.1 (no persistence).
type Redis struct {
	Port  int
	base  string
	proc  *process
	extra []string // more redis-server arguments
}

// Addr is host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)) }

// StartRedis starts redis-server on a free port.
func StartRedis() (*Redis, error) { return startRedis(nil) }

func startRedis(extra []string) (*Redis, error) {
	base, err := os.MkdirTemp("", "dt-redis-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		os.RemoveAll(base)
		return nil, err
	}
	r := &Redis{Port: port, base: base, extra: extra}
	if err := r.Start(); err != nil {
		os.RemoveAll(base)
		return nil, err
	}
	return r, nil
}

// Start (re)starts the server on its port.
func (r *Redis) Start() error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return errors.New("redis-server not found: install Debian's redis-server package (the README's test command does)")
	}
	args := append([]string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.base, "--protected-mode", "no"}, r.extra...)
	r.proc, err = startProcess(filepath.Join(r.base, "redis.log"), nil, bin, args...)
	if err != nil {
		return err
	}
	err = r.proc.waitUntil(15*time.Second, func() error {
		c, err := net.DialTimeout("tcp", r.Addr(), 200*time.Millisecond)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		buf := make([]byte, 7)
		n, err := c.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), "+PONG") {
			return fmt.Errorf("no PONG (%v)", err)
		}
		return nil
	})
	if err != nil {
		r.proc.stop(syscall.SIGKILL, time.Second)
	}
	return err
}

// Kill stops the server abruptly (a crash, as a fault test wants).
func (r *Redis) Kill() { r.proc.stop(syscall.SIGKILL, 5*time.Second) }

// Stop shuts the server down and removes its files.
func (r *Redis) Stop() {
	if r.proc != nil {
		r.proc.stop(syscall.SIGTERM, 5*time.Second)
	}
	os.RemoveAll(r.base)
}

// RedisCluster is a Redis Cluster of real redis-server processes on
// loopback: masters only, every slot assigned.
type RedisCluster struct{ Nodes []*Redis }

// Addr is one node's address (a cluster client discovers the rest).
func (c *RedisCluster) Addr() string { return c.Nodes[0].Addr() }

// StartRedisCluster starts n cluster-enabled servers and forms a cluster
// of them with redis-cli (Debian's redis-tools, installed with redis-server).
func StartRedisCluster(n int) (*RedisCluster, error) {
	c := &RedisCluster{}
	var addrs []string
	for i := 0; i < n; i++ {
		r, err := startRedis([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"})
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, r)
		addrs = append(addrs, r.Addr())
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		c.Stop()
		return nil, errors.New("redis-cli not found: install Debian's redis-tools (comes with redis-server)")
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	if out, err := exec.Command(cli, append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput(); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		for _, r := range c.Nodes {
			out, err := exec.Command(cli, "-p", strconv.Itoa(r.Port), "cluster", "info").Output()
			ok = ok && err == nil && strings.Contains(string(out), "cluster_state:ok")
		}
		if ok {
			return c, nil
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, errors.New("the Redis Cluster did not reach cluster_state:ok within 20 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops every node.
func (c *RedisCluster) Stop() {
	for _, r := range c.Nodes {
		r.Stop()
	}
}

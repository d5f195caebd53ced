package flags

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/upstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// repoRoot is two levels up from this package.
const repoRoot = "../.."

func TestTheCatalogueParsesWithTheEightDocumentedFlags(t *testing.T) {
	c, err := Load(filepath.Join(repoRoot, CatalogPath))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ // docs/operations/feature-flags.md's table
		"gc.http3.enabled":              "bool false",
		"gc.registry.mc_ttl_seconds":    "int 30",
		"mc.webtransport.enabled":       "bool false",
		"mh.admission.hard_limit_ratio": "float 0.8",
		"mh.bandwidth.warning_ratio":    "float 0.7",
		"ac.token.ttl_seconds":          "int 600",
		"mc.mh_selection.strategy":      "string rendezvous",
		"platform.canary.auto_promote":  "bool true",
	}
	if len(c.Flags) != len(want) {
		t.Fatalf("%d flags, want %d", len(c.Flags), len(want))
	}
	for _, f := range c.Flags {
		if got := string(f.Type) + " " + f.Default; got != want[f.Name] {
			t.Errorf("%s: %q, want %q", f.Name, got, want[f.Name])
		}
	}
	ttl := c.Flags[5]
	if ttl.Check("59") == nil || ttl.Check("901") == nil || ttl.Check("900") != nil {
		t.Errorf("ac.token.ttl_seconds bounds not 60..900: %v %v", *ttl.Min, *ttl.Max)
	}
	if c.Flags[6].Check("random") == nil || c.Flags[6].Check("least-loaded") != nil {
		t.Error("mc.mh_selection.strategy accepts a value outside rendezvous, least-loaded, round-robin")
	}
	if gc := c.Flags[1]; gc.Check("4") == nil || gc.Check("301") == nil || gc.Check("30") != nil {
		t.Error("gc.registry.mc_ttl_seconds bounds not 5..300")
	}
}

// TestGeneratedDefaultsAreUpToDate fails when the catalogue changed and
// `go run . flags generate` was not rerun.
func TestGeneratedDefaultsAreUpToDate(t *testing.T) {
	c, err := Load(filepath.Join(repoRoot, CatalogPath))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile(filepath.Join(repoRoot, GeneratedPath))
	if err != nil {
		t.Fatalf("%v: run `go run . flags generate`", err)
	}
	if !bytes.Equal(have, want) {
		t.Fatalf("%s is out of date with %s: run `go run . flags generate`", GeneratedPath, CatalogPath)
	}
}

func TestStrictParsingNamesTheFileTheFlagAndTheFix(t *testing.T) {
	const good = "  - name: gc.http3.enabled\n    type: bool\n    default: false\n    owner: global-controller\n    description: d\n"
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown field", good + "    colour: red\n", "field colour not found"},
		{"unknown top-level key", "flag:\n" + good, "field flag not found"},
		{"bool default that is a string", strings.Replace(good, "default: false", `default: "false"`, 1), `flag "gc.http3.enabled": default "false": not a bool`},
		{"int default that is a float", "  - name: ac.token.ttl_seconds\n    type: int\n    default: 1.5\n    owner: ac-service\n    description: d\n", "not an int"},
		{"string default YAML reads as a number", "  - name: mc.x.y\n    type: string\n    default: 5\n    owner: meeting-controller\n    description: d\n", "not a string (YAML reads it as int; quote it)"},
		{"default not allowed", "  - name: mc.x.y\n    type: string\n    default: fastest\n    allowed: [a, b]\n    owner: meeting-controller\n    description: d\n", `default fastest: not one of the allowed values (a, b)`},
		{"default below min", "  - name: ac.x.y\n    type: int\n    default: 5\n    min: 10\n    owner: ac-service\n    description: d\n", "default 5: below the minimum 10"},
		{"duplicate", good + good, `flag "gc.http3.enabled": duplicate name (first defined on line 2)`},
		{"bad name", strings.Replace(good, "gc.http3.enabled", "GC-http3", 1), `flag "GC-http3": name does not match <service>.<area>.<name>`},
		{"two-part name", strings.Replace(good, "gc.http3.enabled", "gc.http3", 1), "name does not match"},
		{"unknown service", strings.Replace(good, "gc.http3.enabled", "zz.http3.enabled", 1), `name starts with "zz", not a known service`},
		{"wrong owner", strings.Replace(good, "owner: global-controller", "owner: media-handler", 1), "a gc.* flag is owned by global-controller"},
		{"bad type", strings.Replace(good, "type: bool", "type: boolean", 1), `type "boolean" is not bool, int, float or string`},
		{"missing default", strings.Replace(good, "    default: false\n", "", 1), "default is missing"},
		{"bad environment value", good + "    values:\n      prod: maybe\n", "values.prod \"maybe\": not a bool"},
		{"bad remove_by", good + "    remove_by: soon\n", "remove_by \"soon\" is not a date"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y := tc.yaml
			if !strings.HasPrefix(y, "flag:") {
				y = "flags:\n" + y
			}
			_, err := Parse("catalog.yaml", []byte(y))
			if err == nil {
				t.Fatalf("accepted:\n%s", y)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "catalog.yaml") {
				t.Fatalf("error %q does not start with the file and contain %q", err, tc.want)
			}
		})
	}
}

// etcd starts the real etcd built from the Go module proxy (cached in
// ~/.cache/darktower/upstream) on free loopback ports.
func etcd(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	b, err := upstream.EtcdProgram.Build(ctx, upstream.DefaultCacheDir(), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	client, peer := freePort(t), freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(b.Binary, "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "default=http://"+peer, "--log-outputs", filepath.Join(dir, "etcd.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(c, "health")
		cancel()
		if err == nil {
			return client
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			t.Fatalf("etcd not serving after 20 s: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestSyncAgainstARealEtcdIsIdempotentAndPrintsTheDiff(t *testing.T) {
	ep := etcd(t)
	c, err := Load(filepath.Join(repoRoot, CatalogPath))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := SyncOptions{Endpoints: []string{ep}, Env: "test"}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// A key the catalogue no longer has, and a hand-edited value.
	if _, err := cli.Put(ctx, "/darktower/flags/test/gc.old.flag", "true"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/darktower/flags/test/ac.token.ttl_seconds", "120"); err != nil {
		t.Fatal(err)
	}
	// Another environment's keys are not touched.
	if _, err := cli.Put(ctx, "/darktower/flags/prod/gc.http3.enabled", "true"); err != nil {
		t.Fatal(err)
	}

	dry := opts
	dry.DryRun = true
	d, err := Sync(ctx, c, dry)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	d.Print(&out)
	t.Logf("dry run:\n%s", out.String())
	if d.Applied || d.Count("added") != 7 || d.Count("changed") != 1 || d.Count("removed") != 1 {
		t.Fatalf("dry run diff wrong:\n%s", out.String())
	}
	if r, _ := cli.Get(ctx, "/darktower/flags/test/gc.http3.enabled"); len(r.Kvs) != 0 {
		t.Fatal("a dry run wrote to etcd")
	}

	d, err = Sync(ctx, c, opts)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	d.Print(&out)
	t.Logf("sync:\n%s", out.String())
	for _, line := range []string{"+ /darktower/flags/test/gc.http3.enabled = false", "~ /darktower/flags/test/ac.token.ttl_seconds: 120 -> 600",
		"- /darktower/flags/test/gc.old.flag (was true)", "7 added, 1 changed, 1 removed, 0 unchanged (applied"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("diff lacks %q", line)
		}
	}
	r, err := cli.Get(ctx, "/darktower/flags/test/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range r.Kvs {
		got[strings.TrimPrefix(string(kv.Key), "/darktower/flags/test/")] = string(kv.Value)
	}
	for _, f := range c.Flags {
		if got[f.Name] != f.Default {
			t.Errorf("etcd has %s=%q, want %q", f.Name, got[f.Name], f.Default)
		}
	}
	if len(got) != len(c.Flags) {
		t.Errorf("etcd has %d keys under the prefix, want %d: %v", len(got), len(c.Flags), got)
	}
	rev := r.Header.Revision

	d, err = Sync(ctx, c, opts)
	if err != nil {
		t.Fatal(err)
	}
	if d.Applied || d.Count("unchanged") != len(c.Flags) || d.Revision != rev {
		out.Reset()
		d.Print(&out)
		t.Fatalf("second sync was not a no-op (revision %d → %d):\n%s", rev, d.Revision, out.String())
	}
	if p, _ := cli.Get(ctx, "/darktower/flags/prod/gc.http3.enabled"); len(p.Kvs) != 1 || string(p.Kvs[0].Value) != "true" {
		t.Fatal("the sync of env test touched env prod")
	}
}

func TestSyncNamesAnUnreachableEtcd(t *testing.T) {
	c, err := Load(filepath.Join(repoRoot, CatalogPath))
	if err != nil {
		t.Fatal(err)
	}
	addr := freePort(t) // nothing listens there
	_, err = Sync(context.Background(), c, SyncOptions{Endpoints: []string{addr}, Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "is it running and reachable") {
		t.Fatalf("error %v does not name the endpoint and the fix", err)
	}
	_, err = Sync(context.Background(), c, SyncOptions{Endpoints: []string{addr}, Prefix: "darktower"})
	if err == nil || !strings.Contains(err.Error(), "--prefix") {
		t.Fatalf("a prefix without slashes: %v", err)
	}
}

func TestSyncWritesEachEnvironmentsValue(t *testing.T) {
	ep := etcd(t)
	c, err := Parse("catalog.yaml", []byte(`flags:
  - name: gc.http3.enabled
    type: bool
    default: false
    owner: global-controller
    description: d
    values:
      prod: true
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, env := range []string{"prod", "staging"} {
		if _, err := Sync(ctx, c, SyncOptions{Endpoints: []string{ep}, Env: env}); err != nil {
			t.Fatal(err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for env, want := range map[string]string{"prod": "true", "staging": "false"} {
		r, err := cli.Get(ctx, "/darktower/flags/"+env+"/gc.http3.enabled")
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != want {
			t.Fatalf("%s: %v %v, want %s", env, r, err, want)
		}
	}
	// Without --env the keys go directly under the prefix; the
	// environments' keys below it are neither changed nor removed.
	d, err := Sync(ctx, c, SyncOptions{Endpoints: []string{ep}})
	if err != nil || d.Count("added") != 1 || d.Count("removed") != 0 {
		t.Fatalf("sync without --env: %+v %v; want 1 added, nothing removed", d, err)
	}
	if r, _ := cli.Get(ctx, "/darktower/flags/prod/gc.http3.enabled"); len(r.Kvs) != 1 {
		t.Fatal("a sync without --env removed prod's key")
	}
	if _, err := Sync(ctx, c, SyncOptions{Endpoints: []string{ep}, Env: "Prod!"}); err == nil || !strings.Contains(err.Error(), "--env") {
		t.Fatalf("a malformed --env: %v", err)
	}
}

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFlagsCommands: the flags subcommands are wired, say what they need,
// and generate --check agrees with the committed file.
func TestFlagsCommands(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "catalog.yaml")
	if err := os.WriteFile(bad, []byte("flags:\n  - name: gc.http3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args       []string
		code       int
		out, inErr string
	}{
		{[]string{"flags"}, 2, "", "flags needs a subcommand: sync or generate"},
		{[]string{"flags", "sync"}, 2, "", "flags sync needs --etcd host:port"},
		{[]string{"flags", "sync", "--etcd", "127.0.0.1:1", "--catalog", bad}, 1, "", bad + `:2: flag "gc.http3": name does not match`},
		{[]string{"flags", "generate", "--check"}, 0, "services/internal/flags/catalog_gen.go is up to date", ""},
		{[]string{"tools-path"}, 2, "", "tools-path needs a subcommand: etcd"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.inErr) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, stdout.String(), stderr.String(), tc.code, tc.out, tc.inErr)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestCLIDispatch(t *testing.T) {
	for _, c := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"help"}, 0, "version", ""},
		{nil, 2, "commands:", ""},
		{[]string{"no-such-command"}, 2, "", `unknown command "no-such-command"`},
		{[]string{"version"}, 0, "darktower delivery", ""},
		{[]string{"version", "extra"}, 2, "", "version takes no arguments"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), c.args, &stdout, &stderr); code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", c.args, code, c.code, stderr.String())
		}
		if !strings.Contains(stdout.String(), c.out) || !strings.Contains(stderr.String(), c.err) {
			t.Errorf("%v: stdout %q stderr %q", c.args, stdout.String(), stderr.String())
		}
	}
}

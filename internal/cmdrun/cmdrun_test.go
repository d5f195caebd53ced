package cmdrun

import (
	"context"
	"strings"
	"testing"
)

func TestRunKeepsStdoutStreamsBothAndNamesFailures(t *testing.T) {
	var progress strings.Builder
	out, err := Cmd{Progress: &progress}.Run(context.Background(), "sh", "-c", "echo out; echo err >&2")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "out\n" {
		t.Errorf("stdout = %q, want only stdout", out)
	}
	if !strings.Contains(progress.String(), "out\n") || !strings.Contains(progress.String(), "err\n") {
		t.Errorf("progress = %q, want both streams", progress.String())
	}

	_, err = Cmd{Dir: t.TempDir(), TailLines: 3}.Run(context.Background(), "sh", "-c", "for i in $(seq 50); do echo line$i >&2; done; exit 7")
	if err == nil {
		t.Fatal("a failing command returned no error")
	}
	msg := err.Error()
	if !strings.Contains(msg, "exit status 7") || !strings.Contains(msg, "line48\nline49\nline50") || strings.Contains(msg, "line47") || !strings.Contains(msg, "(in ") {
		t.Errorf("error %q: want the status, the directory and exactly the last 3 lines", msg)
	}
}

// Many writes on both streams at once: the race detector checks the lock.
func TestRunCollectsBothStreamsConcurrently(t *testing.T) {
	out, err := Cmd{}.Run(context.Background(), "sh", "-c", "for i in $(seq 200); do echo o$i; echo e$i >&2; done")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "\n"); n != 200 {
		t.Errorf("stdout has %d lines, want 200", n)
	}
}

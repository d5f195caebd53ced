// Package cmdrun runs a command (usually the go tool) the way the pipeline
// needs it: stdout kept for the caller, everything streamed to an
// optional progress writer, and on failure an error that names the command
// and keeps the last lines of its output, where tools say what went wrong.
package cmdrun

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Cmd says where and how to run.
type Cmd struct {
	Dir       string
	Env       []string  // the whole environment; nil: this process's
	Progress  io.Writer // receives stdout and stderr as they come (nil: nothing)
	TailLines int       // output lines kept in the error (0: 30)
	Stdin     io.Reader // nil: none
}

// Run runs name with args and returns its stdout.
func (c Cmd) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	out := &output{progress: c.Progress}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env, cmd.Stdin = c.Dir, c.Env, c.Stdin
	cmd.Stdout, cmd.Stderr = stream{out, true}, stream{out, false}
	if err := cmd.Run(); err != nil {
		n := c.TailLines
		if n == 0 {
			n = 30
		}
		where := ""
		if c.Dir != "" {
			where = " (in " + c.Dir + ")"
		}
		return out.stdout.Bytes(), fmt.Errorf("%s %s%s: %v\n%s", filepath.Base(name), strings.Join(args, " "), where, err, Tail(out.combined.String(), n))
	}
	return out.stdout.Bytes(), nil
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// output collects what the command writes; exec copies stdout and stderr
// in two goroutines, hence the lock.
type output struct {
	mu               sync.Mutex
	stdout, combined bytes.Buffer
	progress         io.Writer
}

type stream struct {
	out      *output
	isStdout bool
}

func (s stream) Write(p []byte) (int, error) {
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	if s.isStdout {
		s.out.stdout.Write(p)
	}
	s.out.combined.Write(p)
	if s.out.progress != nil {
		s.out.progress.Write(p)
	}
	return len(p), nil
}

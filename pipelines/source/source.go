// Package source reads what the pipeline stamps into its outputs from the
// repository: revision, version and the reproducible timestamp.
package source

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Info describes the source being built.
type Info struct {
	Revision string    // full commit hash ("unknown" outside git)
	Version  string    // git describe, or 0.0.0-dev+<short revision>
	Epoch    time.Time // SOURCE_DATE_EPOCH, else the commit time
}

func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// Read inspects the repository at dir. SOURCE_DATE_EPOCH (from env) wins
// over the commit time; outside git it is required.
func Read(dir string, env func(string) string) (Info, error) {
	info := Info{Revision: "unknown"}
	if rev, err := git(dir, "rev-parse", "HEAD"); err == nil {
		info.Revision = rev
	}
	if v := env("SOURCE_DATE_EPOCH"); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			return info, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a non-negative number of seconds", v)
		}
		info.Epoch = time.Unix(n, 0).UTC()
	} else if ct, err := git(dir, "log", "-1", "--format=%ct"); err == nil && ct != "" {
		n, _ := strconv.ParseInt(ct, 10, 64)
		info.Epoch = time.Unix(n, 0).UTC()
	} else {
		return info, fmt.Errorf("no commit time to build from: run inside the git repository or set SOURCE_DATE_EPOCH")
	}
	if d, err := git(dir, "describe", "--tags", "--match", "v*", "--dirty"); err == nil && d != "" {
		info.Version = strings.TrimPrefix(d, "v")
	} else if len(info.Revision) >= 12 {
		info.Version = "0.0.0-dev+" + info.Revision[:12]
	} else {
		info.Version = "0.0.0-dev"
	}
	return info, nil
}

// Getenv is os.Getenv (the default env for Read).
var Getenv = os.Getenv

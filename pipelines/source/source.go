// Package source reads what the pipeline stamps into its outputs from the
// repository: revision, version and the reproducible timestamp.
package source

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Info describes the source being built.
type Info struct {
	Revision string    // full commit hash ("unknown" outside git)
	Version  string    // git describe, or 0.0.0-dev+<short revision>
	Epoch    time.Time // SOURCE_DATE_EPOCH, else the commit time
	// URL is the repository's web address: GITHUB_SERVER_URL/GITHUB_REPOSITORY
	// in GitHub Actions, else the origin remote's URL as https (credentials
	// and .git dropped); "" when neither is known.
	URL string
}

// linkedCheckout returns an error naming the cause when dir/.git is a file
// (a git worktree or submodule checkout) whose repository git cannot read
// from here — e.g. the checkout was copied (into a container, a Dagger
// engine) without the main repository it points to.
func linkedCheckout(dir string) error {
	raw, err := os.ReadFile(filepath.Join(dir, ".git"))
	if err != nil {
		return nil // a directory, or not a checkout
	}
	gitdir := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(raw)), "gitdir:"))
	if _, err := git(dir, "rev-parse", "HEAD"); err == nil {
		return nil
	}
	return fmt.Errorf("%s is a file pointing to %s: this is a git worktree or submodule checkout whose repository is not here, "+
		"so the revision, version and commit time cannot be read; build from a full clone (git clone, or actions/checkout), "+
		"or copy the repository in with its .git directory", filepath.Join(dir, ".git"), gitdir)
}

// RemoteURL turns a git remote URL into the repository's https address:
// git@host:org/repo.git and ssh://git@host/org/repo become
// https://host/org/repo; user:password@ in an https URL is dropped.
func RemoteURL(remote string) string {
	remote = strings.TrimSpace(remote)
	if remote == "" {
		return ""
	}
	if u, err := url.Parse(remote); err == nil && u.Scheme != "" && u.Host != "" {
		switch u.Scheme {
		case "https", "http", "ssh", "git":
		default:
			return ""
		}
		scheme := u.Scheme
		if scheme != "http" {
			scheme = "https"
		}
		return scheme + "://" + u.Hostname() + strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), ".git")
	}
	if strings.Contains(remote, "://") || strings.HasPrefix(remote, "/") {
		return "" // a local path or another scheme: no web address
	}
	// scp-like: [user@]host:path
	if at := strings.Index(remote, "@"); at >= 0 {
		remote = remote[at+1:]
	}
	host, path, ok := strings.Cut(remote, ":")
	if !ok || host == "" || path == "" || strings.Contains(host, "/") {
		return ""
	}
	return "https://" + host + "/" + strings.TrimSuffix(strings.Trim(path, "/"), ".git")
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
	if err := linkedCheckout(dir); err != nil {
		return info, err
	}
	if rev, err := git(dir, "rev-parse", "HEAD"); err == nil {
		info.Revision = rev
	}
	if server, repo := env("GITHUB_SERVER_URL"), env("GITHUB_REPOSITORY"); server != "" && repo != "" {
		info.URL = strings.TrimSuffix(server, "/") + "/" + repo
	} else if remote, err := git(dir, "remote", "get-url", "origin"); err == nil {
		info.URL = RemoteURL(remote)
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

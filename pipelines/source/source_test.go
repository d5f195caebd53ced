package source

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

func repo(t *testing.T) string {
	dir := t.TempDir()
	run(t, dir, "init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "add", "f")
	run(t, dir, "commit", "-q", "-m", "c")
	return dir
}

func noEnv(string) string { return "" }

func TestRemoteURL(t *testing.T) {
	for remote, want := range map[string]string{
		"git@github.com:Org/repo.git":                       "https://github.com/Org/repo",
		"ssh://git@ghe.example.com/org/repo.git":            "https://ghe.example.com/org/repo",
		"https://user:s3cret@github.com/org/repo.git":       "https://github.com/org/repo",
		"https://gitlab.example.com/group/sub/project.git/": "https://gitlab.example.com/group/sub/project",
		"http://127.0.0.1:3000/org/repo":                    "http://127.0.0.1/org/repo",
		"/srv/git/repo.git":                                 "",
		"file:///srv/git/repo.git":                          "",
		"":                                                  "",
	} {
		if got := RemoteURL(remote); got != want {
			t.Errorf("RemoteURL(%q) = %q, want %q", remote, got, want)
		}
	}
}

// The source URL comes from the checkout: GitHub Actions' variables, else
// the origin remote; no hard-coded repository.
func TestSourceURLFromTheCheckout(t *testing.T) {
	dir := repo(t)
	info, err := Read(dir, noEnv)
	if err != nil || info.URL != "" {
		t.Fatalf("no remote: URL %q, %v", info.URL, err)
	}
	run(t, dir, "remote", "add", "origin", "git@github.com:someone/fork.git")
	if info, err = Read(dir, noEnv); err != nil || info.URL != "https://github.com/someone/fork" {
		t.Fatalf("origin remote: URL %q, %v", info.URL, err)
	}
	env := map[string]string{"GITHUB_SERVER_URL": "https://ghe.example.com", "GITHUB_REPOSITORY": "org/delivery"}
	if info, err = Read(dir, func(k string) string { return env[k] }); err != nil || info.URL != "https://ghe.example.com/org/delivery" {
		t.Fatalf("Actions: URL %q, %v", info.URL, err)
	}
}

// A worktree (.git is a file) works where its repository is; copied
// without it (as into a container), the error names the cause.
func TestLinkedCheckoutWithoutItsRepositoryNamesTheCause(t *testing.T) {
	dir := repo(t)
	wt := filepath.Join(t.TempDir(), "wt")
	run(t, dir, "worktree", "add", "-q", wt)
	info, err := Read(wt, noEnv)
	if err != nil || len(info.Revision) != 40 {
		t.Fatalf("a worktree next to its repository: %+v, %v", info, err)
	}
	copied := t.TempDir()
	for _, f := range []string{".git", "f"} {
		raw, err := os.ReadFile(filepath.Join(wt, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copied, f), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(dir); err != nil { // the repository it points to is gone
		t.Fatal(err)
	}
	_, err = Read(copied, func(k string) string {
		if k == "SOURCE_DATE_EPOCH" {
			return "1"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "worktree or submodule") || !strings.Contains(err.Error(), filepath.Join(copied, ".git")+" is a file") {
		t.Fatalf("want the cause named, got %v", err)
	}
}

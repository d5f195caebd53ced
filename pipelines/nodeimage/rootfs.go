package nodeimage

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/darktower/delivery/internal/cmdrun"
	"github.com/darktower/delivery/pipelines/upstream"
)

// A Debian root made with debootstrap: the kind node itself, and the
// smaller root the network components' images (kube-proxy, kube-router)
// and the storage helper run on.
type rootfsSpec struct {
	Name     string
	Packages []string
}

// nodePackages are what kind's base image installs (images/base/Dockerfile)
// that Debian packages, plus Debian's containerd, runc and CNI plugins
// (kind builds those from source) and ipset for kube-router.
var nodeRoot = rootfsSpec{Name: "node", Packages: []string{
	"systemd", "systemd-sysv", "dbus", "containerd", "runc", "containernetworking-plugins",
	"conntrack", "iptables", "nftables", "ipset", "iproute2", "ethtool", "util-linux", "mount", "kmod",
	"libseccomp2", "pigz", "e2fsprogs", "bash", "ca-certificates", "jq", "procps",
}}

// netRoot carries the tools kube-proxy (iptables mode) and kube-router
// call: iptables, ip6tables, ipset, conntrack, ip; and a shell for
// kube-router's CNI install step and the storage helper.
var netRoot = rootfsSpec{Name: "net", Packages: []string{"iptables", "ipset", "conntrack", "iproute2", "kmod"}}

func (r rootfsSpec) key(suite, mirror string) string {
	h := sha256.Sum256([]byte(strings.Join(append([]string{r.Name, suite, mirror}, r.Packages...), "\n")))
	return hex.EncodeToString(h[:])[:16]
}

func rootfsDir(cacheDir, mirror string, r rootfsSpec) string {
	return filepath.Join(cacheDir, "rootfs", fmt.Sprintf("%s-%s-%s", r.Name, upstream.Versions.Debian, r.key(upstream.Versions.Debian, mirror)))
}

// ensureRootfs returns a debootstrapped root for spec, made once per
// (suite, mirror, packages) under cacheDir. debootstrap needs root.
func ensureRootfs(ctx context.Context, cacheDir, mirror string, r rootfsSpec, progress io.Writer) (string, error) {
	dir := rootfsDir(cacheDir, mirror, r)
	if upstream.Exists(filepath.Join(dir, ".complete")) {
		return dir, nil
	}
	unlock, err := upstream.Lock(cacheDir, "rootfs-"+filepath.Base(dir), progress)
	if err != nil {
		return "", err
	}
	defer unlock()
	if upstream.Exists(filepath.Join(dir, ".complete")) {
		return dir, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("making the node image's Debian root with debootstrap needs root: run as root (CI and test machines are) or pass --node-image with a prebuilt node image")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("debootstrap not found: apt-get install debootstrap (scripts/install-test-deps.sh installs it)")
	}
	start := time.Now()
	upstream.Say(progress, "node-image: debootstrap %s (%s root: %s) from %s", upstream.Versions.Debian, r.Name, strings.Join(r.Packages, " "), mirror)
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	if _, err := (cmdrun.Cmd{TailLines: 30}).Run(ctx, "debootstrap", "--variant=minbase",
		"--include="+strings.Join(r.Packages, ","), upstream.Versions.Debian, tmp, mirror); err != nil {
		return "", fmt.Errorf("debootstrap %s from %s: %w", upstream.Versions.Debian, mirror, err)
	}
	// What a container image does not need: package caches, docs, manuals.
	for _, p := range []string{"var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"} {
		entries, _ := os.ReadDir(filepath.Join(tmp, p))
		for _, e := range entries {
			os.RemoveAll(filepath.Join(tmp, p, e.Name()))
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", err
	}
	if err := upstream.ReplaceDir(tmp, dir); err != nil {
		return "", err
	}
	upstream.Say(progress, "node-image: %s root ready in %s", r.Name, time.Since(start).Round(time.Second))
	return dir, nil
}

// DefaultMirror is the Debian mirror the host's apt uses (its first deb
// URI), else deb.debian.org.
func DefaultMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	for _, f := range files {
		if m := firstDebianURI(f); m != "" {
			return m
		}
	}
	return "http://deb.debian.org/debian"
}

// firstDebianURI reads a one-line-style or deb822 sources file.
func firstDebianURI(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		var uri string
		switch {
		case strings.HasPrefix(line, "URIs:") && len(fields) > 1:
			uri = fields[1]
		case len(fields) >= 3 && fields[0] == "deb":
			uri = fields[1]
			if strings.HasPrefix(uri, "[") { // deb [options] URI suite
				for i := 2; i < len(fields); i++ {
					if strings.HasSuffix(fields[i-1], "]") {
						uri = fields[i]
						break
					}
				}
			}
		}
		if strings.HasPrefix(uri, "http") && !strings.Contains(uri, "security") && strings.HasSuffix(strings.TrimSuffix(uri, "/"), "/debian") {
			return strings.TrimSuffix(uri, "/")
		}
	}
	return ""
}

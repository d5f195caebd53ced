// Package nodeimage builds a kind node image where kindest/node cannot be
// pulled: a Debian root made with debootstrap (systemd, containerd, runc,
// iptables, CNI plugins), kind's own entrypoint, units and containerd
// config (from the sigs.k8s.io/kind module), Kubernetes binaries built from
// the Go module proxy, and every image the cluster needs — control plane,
// kube-proxy, etcd, CoreDNS, pause, kube-router (pod network and
// NetworkPolicy) and local-path-provisioner — assembled with the
// repository's own image code and preloaded into the node's containerd,
// the way kind's own `build node-image` does. The result is cached in the
// Docker engine under a content key and rebuilt only when an input changes.
package nodeimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/darktower/delivery/internal/cmdrun"
	"github.com/darktower/delivery/pipelines/upstream"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// recipe changes whenever what this package puts into the image changes
// in a way the other inputs do not show.
const recipe = "darktower-node-3"

// Repository is where built node images are named.
const Repository = "darktower.local/kind-node"

//go:embed manifests/default-cni.yaml
var cniManifest string

//go:embed manifests/default-storage.yaml
var storageManifest string

// Options say how to build.
type Options struct {
	CacheDir string    // upstream builds and Debian roots (default upstream.DefaultCacheDir())
	Mirror   string    // Debian mirror (default: the host's apt mirror)
	Progress io.Writer // one line per step, with durations
	Rebuild  bool      // build even when an image with the same key exists
}

// Result is the built (or reused) image and what each step took.
type Result struct {
	Image  string
	Key    string
	Reused bool
	Steps  []Step
}

// Step is one timed part of a build.
type Step struct {
	Name     string
	Duration time.Duration
}

func (r *Result) timed(name string, start time.Time, progress io.Writer) {
	d := time.Since(start)
	r.Steps = append(r.Steps, Step{name, d})
	upstream.Say(progress, "node-image: %s (%s)", name, d.Round(100*time.Millisecond))
}

// Images preloaded into the node, by role.
var (
	KubeRouterImage = "darktower.local/kube-router:" + upstream.Versions.KubeRouter
	LocalPathImage  = "darktower.local/local-path-provisioner:" + upstream.Versions.LocalPath
	PauseImage      = "registry.k8s.io/pause:" + upstream.Versions.Pause
	EtcdImageTag    = strings.TrimPrefix(upstream.Versions.Etcd, "v") + "-0" // kubeadm's tag form
	CoreDNSImageTag = upstream.Versions.CoreDNS
)

// NodeToolsImage is the storage helper (Debian's sh, mkdir, rm), named by
// the node image's key.
func NodeToolsImage(key string) string { return "darktower.local/node-tools:" + key[:12] }

// Build returns a node image for upstream.Versions.Kubernetes in the local
// Docker engine, building it if no image with the same inputs exists.
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.CacheDir == "" {
		o.CacheDir = upstream.DefaultCacheDir()
	}
	if o.Mirror == "" {
		o.Mirror = DefaultMirror()
	}
	total := time.Now()
	kindFiles, err := kindBaseFiles(ctx, o.CacheDir)
	if err != nil {
		return nil, err
	}
	key, err := contentKey(o.Mirror, kindFiles)
	if err != nil {
		return nil, err
	}
	r := &Result{Key: key, Image: fmt.Sprintf("%s:%s-%s", Repository, upstream.Versions.Kubernetes, key[:12])}
	if !o.Rebuild {
		if _, err := docker(ctx, nil, "image", "inspect", "--format", "{{.Id}}", r.Image); err == nil {
			r.Reused = true
			upstream.Say(o.Progress, "node-image: %s is up to date (key %s), reused", r.Image, key[:12])
			return r, nil
		}
	}
	unlock, err := upstream.Lock(o.CacheDir, "node-image-"+key[:12], o.Progress)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := docker(ctx, nil, "image", "inspect", "--format", "{{.Id}}", r.Image); err == nil && !o.Rebuild {
		r.Reused = true // built by whoever held the lock
		return r, nil
	}
	upstream.Say(o.Progress, "node-image: building %s (Kubernetes %s on Debian %s; key %s)", r.Image, upstream.Versions.Kubernetes, upstream.Versions.Debian, key[:12])

	start := time.Now()
	kube, err := upstream.Kubernetes(ctx, o.CacheDir, o.Progress)
	if err != nil {
		return nil, err
	}
	programs := map[string]*upstream.Built{}
	for _, p := range []upstream.Program{upstream.EtcdProgram, upstream.CoreDNSProgram, upstream.KubeRouterProgram, upstream.LocalPathProgram} {
		b, err := p.Build(ctx, o.CacheDir, o.Progress)
		if err != nil {
			return nil, err
		}
		programs[p.Name] = b
	}
	pause, err := upstream.Pause(ctx, o.CacheDir, o.Progress)
	if err != nil {
		return nil, err
	}
	r.timed("components built from the Go module proxy", start, o.Progress)

	start = time.Now()
	nodeRootDir, err := ensureRootfs(ctx, o.CacheDir, o.Mirror, nodeRoot, o.Progress)
	if err != nil {
		return nil, err
	}
	netRootDir, err := ensureRootfs(ctx, o.CacheDir, o.Mirror, netRoot, o.Progress)
	if err != nil {
		return nil, err
	}
	r.timed("Debian roots ready", start, o.Progress)

	epoch := time.Unix(0, 0).UTC()
	overlay, err := nodeOverlay(nodeRootDir, kindFiles, kube, key)
	if err != nil {
		return nil, err
	}
	start = time.Now()
	base := fmt.Sprintf("%s-base:%s", Repository, key[:12])
	if err := dockerImport(ctx, base, nodeRootDir, overlay, epoch); err != nil {
		return nil, err
	}
	defer docker(context.WithoutCancel(ctx), nil, "image", "rm", base)
	r.timed("node root imported into Docker", start, o.Progress)

	start = time.Now()
	netLayer, err := rootLayer(netRootDir, epoch)
	if err != nil {
		return nil, err
	}
	images := componentImages(kube, programs, pause, key)
	// The data stores' image too: a preview then starts without loading it.
	data, err := BuildDataServices(ctx, o.CacheDir, o.Mirror, o.Progress)
	if err != nil {
		return nil, err
	}
	dataImage, err := data.Image()
	if err != nil {
		return nil, err
	}
	container := "darktower-node-build-" + key[:12]
	docker(ctx, nil, "rm", "-f", container)
	if _, err := docker(ctx, nil, "run", "-d", "--name", container, "--entrypoint", "sleep", base, "infinity"); err != nil {
		return nil, fmt.Errorf("starting the build container: %w", err)
	}
	defer docker(context.WithoutCancel(ctx), nil, "rm", "-f", container)
	if err := preload(ctx, container, images, netLayer, epoch, map[string]v1.Image{data.Ref: dataImage}); err != nil {
		return nil, err
	}
	r.timed(fmt.Sprintf("%d images preloaded into the node's containerd", len(images)+1), start, o.Progress)

	start = time.Now()
	// kindest/node also sets STOPSIGNAL SIGRTMIN+3 (systemd's halt signal);
	// Docker 20.10 refuses it in a commit, and kind removes nodes with a
	// forced delete, so the default is left.
	if _, err := docker(ctx, nil, "commit",
		"--change", `ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]`,
		"--change", `ENV container=docker`,
		"--change", `LABEL io.darktower.node-image.key=`+key,
		container, r.Image); err != nil {
		return nil, fmt.Errorf("committing the node image: %w", err)
	}
	r.timed("node image committed", start, o.Progress)
	upstream.Say(o.Progress, "node-image: built %s in %s", r.Image, time.Since(total).Round(time.Second))
	pruneOlderImages(ctx, r.Image, o.Progress)
	return r, nil
}

// pruneOlderImages removes node images of other keys that no container
// uses (each is ~750 MB) and that are more than a day old (another run may
// have just built one it is about to start); one in use by a cluster stays.
func pruneOlderImages(ctx context.Context, keep string, progress io.Writer) {
	out, err := docker(ctx, nil, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", Repository)
	if err != nil {
		return
	}
	for _, img := range strings.Fields(string(out)) {
		if img == keep {
			continue
		}
		created, err := docker(ctx, nil, "image", "inspect", "--format", "{{.Created}}", img)
		t, perr := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(created)))
		if err != nil || perr != nil || time.Since(t) < 24*time.Hour {
			continue
		}
		if _, err := docker(ctx, nil, "image", "rm", img); err == nil {
			upstream.Say(progress, "node-image: removed the superseded %s", img)
		}
	}
}

// kindBaseFiles are the files of kind's base image this node takes from
// the sigs.k8s.io/kind module (images/base/files): entrypoint, systemd
// units, containerd and crictl configs, sysctls, mount helpers.
func kindBaseFiles(ctx context.Context, cacheDir string) (map[string][]byte, error) {
	src := filepath.Join(cacheDir, "src", "kind-"+upstream.Versions.Kind)
	unlock, err := upstream.Lock(cacheDir, "kind-"+upstream.Versions.Kind, nil)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := upstream.ThrowawayModule(src, map[string]string{"go.mod": "module darktower.local/upstream-kind\n\ngo 1.24.0\n"}); err != nil {
		return nil, err
	}
	mod, err := upstream.Download(ctx, src, "sigs.k8s.io/kind@"+upstream.Versions.Kind)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(mod.Dir, "images", "base", "files")
	want := []string{
		"usr/local/bin/entrypoint",
		"kind/bin/mount-product-files.sh", "kind/bin/undo-mount-hacks.sh", "kind/bin/create-kubelet-cgroup-v2.sh",
		"etc/containerd/config.toml", "etc/crictl.yaml", "etc/default/kubelet",
		"etc/sysctl.d/10-network-magic.conf", "etc/sysctl.d/10-network-security.conf",
		"etc/systemd/system/containerd.service", "etc/systemd/system/kubelet.service",
		"etc/systemd/system/kubelet.slice", "etc/systemd/system/undo-mount-hacks.service",
		"etc/systemd/system/kubelet.service.d/10-kubeadm.conf", "etc/systemd/system/kubelet.service.d/11-kind.conf",
	}
	files := map[string][]byte{}
	for _, p := range want {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			return nil, fmt.Errorf("sigs.k8s.io/kind@%s: %w", upstream.Versions.Kind, err)
		}
		files[p] = b
	}
	return files, nil
}

// contentKey hashes every input of the image: versions, Debian packages
// and mirror, kind's files, this package's manifests and recipe.
func contentKey(mirror string, kindFiles map[string][]byte) (string, error) {
	h := sha256.New()
	v, err := json.Marshal(upstream.Versions)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%s\n%s\n%s\n", recipe, runtime.GOARCH, v, mirror,
		strings.Join(nodeRoot.Packages, ","), strings.Join(netRoot.Packages, ","), strings.Join(dataRoot.Packages, ","))
	names := make([]string, 0, len(kindFiles))
	for n := range kindFiles {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s %x\n", n, sha256.Sum256(kindFiles[n]))
	}
	io.WriteString(h, cniManifest)
	io.WriteString(h, storageManifest)
	io.WriteString(h, oomQuirkScript)
	io.WriteString(h, postgresEntrypoint)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// oomQuirkScript runs before containerd: where the node lacks
// CAP_SYS_RESOURCE (a host whose root lacks it), containerd cannot lower
// a container's OOM score and every pod fails to start, so it is told not
// to try — detected, the way kind's entrypoint does it for rootless hosts.
const oomQuirkScript = `#!/bin/sh
# Added by the Dark Tower node image (pipelines/nodeimage).
set -eu
capeff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
if [ $(( (0x$capeff >> 24) & 1 )) -eq 0 ]; then
  echo "darktower: no CAP_SYS_RESOURCE; containerd restrict_oom_score_adj = true"
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml
fi
`

// nodeOverlay is everything the node image adds to its Debian root,
// following kind's images/base/Dockerfile step by step.
func nodeOverlay(root string, kindFiles map[string][]byte, kube *upstream.KubeBinaries, key string) (tree, error) {
	t := tree{}
	for p, b := range kindFiles {
		mode := int64(0o644)
		if strings.HasPrefix(p, "usr/local/bin/") || strings.HasPrefix(p, "kind/bin/") {
			mode = 0o755
		}
		t.file(p, mode, b)
	}
	// Debian's sandbox image is the one preloaded here.
	config := string(kindFiles["etc/containerd/config.toml"])
	if !strings.Contains(config, `sandbox_image = "registry.k8s.io/pause:`) {
		return nil, fmt.Errorf("kind %s's containerd config no longer sets sandbox_image: update pipelines/nodeimage", upstream.Versions.Kind)
	}
	config = replaceLineWithPrefix(config, "  sandbox_image = ", fmt.Sprintf("  sandbox_image = %q", PauseImage))
	t.file("etc/containerd/config.toml", 0o644, []byte(config))
	t.file("kind/bin/darktower-oom-score-quirk.sh", 0o755, []byte(oomQuirkScript))
	t.file("etc/systemd/system/containerd.service.d/20-darktower.conf", 0o644,
		[]byte("[Service]\nExecStartPre=/kind/bin/darktower-oom-score-quirk.sh\n"))
	// kind's unit runs /usr/local/bin/containerd; Debian's is in /usr/bin.
	t.link("usr/local/bin/containerd", "/usr/bin/containerd")
	// Debian installs the CNI plugins where kind's containerd config does not look.
	plugins, err := os.ReadDir(filepath.Join(root, "usr/lib/cni"))
	if err != nil || len(plugins) == 0 {
		return nil, fmt.Errorf("the node root has no CNI plugins in /usr/lib/cni: %v", err)
	}
	for _, p := range plugins {
		t.link("opt/cni/bin/"+p.Name(), "/usr/lib/cni/"+p.Name())
	}
	for _, c := range []string{"kubelet", "kubeadm", "kubectl"} {
		t.copy("usr/bin/"+c, 0o755, kube.Path(c))
	}
	t.file("kind/version", 0o644, []byte(kube.Version))
	cni, err := render(cniManifest, key)
	if err != nil {
		return nil, err
	}
	storage, err := render(storageManifest, key)
	if err != nil {
		return nil, err
	}
	t.file("kind/manifests/default-cni.yaml", 0o644, cni)
	t.file("kind/manifests/default-storage.yaml", 0o644, storage)
	t.dir("etc/kubernetes/manifests")
	// Units: only kind's are enabled (kind's Dockerfile removes every
	// other wants link, so the node boots straight to containerd and kubelet).
	for _, glob := range []string{
		"usr/lib/systemd/system/multi-user.target.wants/*", "etc/systemd/system/*.wants/*",
		"usr/lib/systemd/system/local-fs.target.wants/*", "usr/lib/systemd/system/sockets.target.wants/*udev*",
		"usr/lib/systemd/system/sockets.target.wants/*initctl*", "usr/lib/systemd/system/basic.target.wants/*",
		"usr/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service",
	} {
		matches, _ := filepath.Glob(filepath.Join(root, glob))
		for _, m := range matches {
			rel, _ := filepath.Rel(root, m)
			t.remove(filepath.ToSlash(rel))
		}
	}
	for _, unit := range []string{"kubelet.service", "containerd.service", "undo-mount-hacks.service"} {
		t.link("etc/systemd/system/multi-user.target.wants/"+unit, "/etc/systemd/system/"+unit)
	}
	t.link("etc/systemd/system/systemd-binfmt.service", "/dev/null")
	journald, err := os.ReadFile(filepath.Join(root, "etc/systemd/journald.conf"))
	if err != nil {
		return nil, err
	}
	t.file("etc/systemd/journald.conf", 0o644, append(journald, []byte("ReadKMsg=no\n")...))
	return t, nil
}

func replaceLineWithPrefix(text, prefix, line string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			lines[i] = line
		}
	}
	return strings.Join(lines, "\n")
}

func render(manifest, key string) ([]byte, error) {
	t, err := template.New("manifest").Option("missingkey=error").Parse(manifest)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err = t.Execute(&b, map[string]string{"KubeRouterImage": KubeRouterImage, "LocalPathImage": LocalPathImage, "NodeToolsImage": NodeToolsImage(key)})
	return b.Bytes(), err
}

// netBindServiceCapability is `setcap cap_net_bind_service=+ep` as the
// security.capability xattr (struct vfs_cap_data, revision 2): magic with
// the effective flag, then permitted bit 10 (CAP_NET_BIND_SERVICE).
const netBindServiceCapability = "\x01\x00\x00\x02" + "\x00\x04\x00\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00"

// componentImages are the images preloaded into the node.
func componentImages(kube *upstream.KubeBinaries, programs map[string]*upstream.Built, pause, key string) []componentImage {
	var images []componentImage
	k8s := "registry.k8s.io/"
	for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		images = append(images, componentImage{Ref: k8s + c + ":" + kube.Version, Base: "skeleton", User: "0",
			Files: tree{"usr/local/bin/" + c: {Mode: 0o755, Src: kube.Path(c)}}})
	}
	images = append(images,
		componentImage{Ref: k8s + "kube-proxy:" + kube.Version, Base: "net", User: "0",
			Files: tree{"usr/local/bin/kube-proxy": {Mode: 0o755, Src: kube.Path("kube-proxy")}}},
		componentImage{Ref: k8s + "etcd:" + EtcdImageTag, Base: "skeleton", User: "0",
			Files: tree{"usr/local/bin/etcd": {Mode: 0o755, Src: programs["etcd"].Binary}}},
		componentImage{Ref: k8s + "coredns/coredns:" + CoreDNSImageTag, Base: "skeleton", User: "65532:65532",
			// Non-root, binding :53 through the file capability, as CoreDNS's own image does.
			Entrypoint: []string{"/coredns"}, Files: tree{"coredns": {Mode: 0o755, Src: programs["coredns"].Binary,
				Xattrs: map[string]string{"security.capability": netBindServiceCapability}}}},
		componentImage{Ref: PauseImage, Base: "scratch", User: "65535:65535",
			Entrypoint: []string{"/pause"}, Files: tree{"pause": {Mode: 0o755, Src: pause}}},
		componentImage{Ref: KubeRouterImage, Base: "net", User: "0",
			Entrypoint: []string{"/usr/local/bin/kube-router"},
			Files:      tree{"usr/local/bin/kube-router": {Mode: 0o755, Src: programs["kube-router"].Binary}}},
		componentImage{Ref: LocalPathImage, Base: "skeleton", User: "0",
			Files: tree{"usr/bin/local-path-provisioner": {Mode: 0o755, Src: programs["local-path-provisioner"].Binary}}},
		componentImage{Ref: NodeToolsImage(key), Base: "net", User: "0", Files: tree{}},
	)
	return images
}

// dockerImport streams the node root, overlay applied, into Docker as an
// image (one layer; no compression, no temporary file).
func dockerImport(ctx context.Context, ref, root string, overlay tree, epoch time.Time) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeRootTar(pw, root, overlay, epoch)) }()
	_, err := docker(ctx, pr, "import", "-", ref)
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("docker import of the node root: %w", err)
	}
	return nil
}

// preload starts containerd in the build container, imports the component
// images into its k8s.io namespace (pinned, so kubelet never collects
// them), writes the base OCI spec kind's containerd config names, and
// checks that every image kubeadm will ask for is there.
func preload(ctx context.Context, container string, images []componentImage, netLayer v1.Layer, epoch time.Time, extra map[string]v1.Image) error {
	exec := func(stdin io.Reader, args ...string) (string, error) {
		out, err := docker(ctx, stdin, append([]string{"exec", "-i", container}, args...)...)
		return string(out), err
	}
	if _, err := exec(nil, "bash", "-c", "nohup containerd >/var/log/containerd-build.log 2>&1 &"); err != nil {
		return err
	}
	if _, err := exec(nil, "bash", "-c", "for i in $(seq 50); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; cat /var/log/containerd-build.log; exit 1"); err != nil {
		return fmt.Errorf("containerd did not start in the build container: %w", err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(assemble(pw, images, netLayer, epoch, extra)) }()
	if _, err := exec(pr, "ctr", "--namespace=k8s.io", "images", "import", "--label=io.cri-containerd.pinned=pinned", "--no-unpack", "--digests", "-"); err != nil {
		pr.CloseWithError(err)
		return fmt.Errorf("importing the component images: %w", err)
	}
	if _, err := exec(nil, "bash", "-c", `ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer|length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json`); err != nil {
		return fmt.Errorf("writing the base OCI spec: %w", err)
	}
	listed, err := exec(nil, "ctr", "--namespace=k8s.io", "images", "list", "-q")
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, l := range strings.Fields(listed) {
		have[l] = true
	}
	required, err := exec(nil, "kubeadm", "config", "images", "list", "--kubernetes-version", upstream.Versions.Kubernetes)
	if err != nil {
		return err
	}
	for _, img := range strings.Fields(required) {
		// etcd and CoreDNS are ours at pinned tags the cluster's kubeadm
		// config names (pipelines/kindcluster); the rest must match.
		if strings.HasPrefix(img, "registry.k8s.io/etcd:") || strings.HasPrefix(img, "registry.k8s.io/coredns/") {
			continue
		}
		if !have[img] {
			return fmt.Errorf("kubeadm %s needs %s, which the node image does not carry", upstream.Versions.Kubernetes, img)
		}
	}
	for _, c := range images {
		if !have[c.Ref] {
			return fmt.Errorf("%s was not imported into the node's containerd", c.Ref)
		}
	}
	// Stop containerd cleanly so its metadata is flushed before the commit
	// (it stays a zombie under the container's sleep: wait for that state).
	if _, err := exec(nil, "bash", "-c", "pkill -x containerd; for i in $(seq 100); do ps -C containerd -o stat= | grep -qv Z || exit 0; sleep 0.2; done; exit 1"); err != nil {
		return fmt.Errorf("containerd did not stop in the build container: %w", err)
	}
	return nil
}

// docker runs the docker CLI (DOCKER_HOST and contexts apply).
func docker(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	return cmdrun.Cmd{Stdin: stdin, TailLines: 20}.Run(ctx, "docker", args...)
}

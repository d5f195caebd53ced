// Package build is the pipeline's build stage: it compiles each service per
// platform and assembles distroless, non-root, reproducible OCI images and
// a multi-platform index per service, daemonless, with go-containerregistry.
// Like ko, it only builds: the images land in an OCI layout under the output
// directory; publishing to a registry is a separate step.
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/darktower/delivery/pipelines/catalog"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options are the build stage's inputs.
type Options struct {
	Root      string             // repository root (modules are relative to it)
	Specs     []*catalog.Spec    // what to build
	Platforms []catalog.Platform // nil: each spec's own platforms
	Base      *Base              // resolved base image
	Epoch     time.Time          // SOURCE_DATE_EPOCH: created time and every mtime
	Version   string             // stamped into binaries and labels
	Revision  string             // source revision, stamped likewise
	Source    string             // org.opencontainers.image.source
	WorkDir   string             // where binaries are compiled (a temp dir when empty)
	Jobs      int                // concurrent go builds (1 when 0; each uses every core)
	Progress  io.Writer          // one line per step with durations (nil: silent)
	Previous  *Previous          // the last build in the output directory (nil: assemble everything)
	// GoTags are build tags for `go build -tags`: test builds only (e.g.
	// the services' chaosfragile and canaryfault fault knobs); they land
	// in every binary's build info, and the pipeline never publishes such
	// a build.
	GoTags []string
	// SymbolsDir, when set, is where Result.SymbolsBinary links a
	// binary with its symbol table kept (no -s): the images' binaries are
	// stripped, and govulncheck needs the symbols to tell which functions
	// a binary holds. Only the link is redone, and only when the scan asks
	// (a reused scan does not): the compiled packages come from the build
	// cache, and the linker drops the same dead code either way.
	SymbolsDir string
}

// PlatformImage is one built per-platform image.
type PlatformImage struct {
	Platform         catalog.Platform `json:"platform"`
	Digest           string           `json:"digest"`
	CompressedSize   int64            `json:"compressedSize"`
	UncompressedSize int64            `json:"uncompressedSize"`
	Layers           int              `json:"layers"`
	SBOM             *SBOMRecord      `json:"sbom,omitempty"`            // sbom stage
	Vulnerabilities  *VulnCounts      `json:"vulnerabilities,omitempty"` // scan stage
	image            v1.Image
}

// Image is one built service: its index and per-platform images.
type Image struct {
	Service    string           `json:"service"`
	Tag        string           `json:"tag"`
	Digest     string           `json:"digest"`
	BaseName   string           `json:"baseName"`
	BaseDigest string           `json:"baseDigest"`
	Platforms  []PlatformImage  `json:"platforms"`
	Pushed     string           `json:"pushed,omitempty"`    // repo:tag@digest once published
	Loaded     string           `json:"loadedID,omitempty"`  // Docker image ID once loaded (--load)
	Signature  *SignatureRecord `json:"signature,omitempty"` // sign stage
	BuildKey   string           `json:"buildKey"`            // hash of every input; equal keys, equal images
	Reused     bool             `json:"-"`                   // taken unchanged from the previous build
	Index      v1.ImageIndex    `json:"-"`
}

// Result is the build stage's output.
type Result struct {
	Images  []*Image
	Compile time.Duration
	Build   time.Duration

	symbols map[binKey]*symbolsLink // by service and platform (Options.SymbolsDir)
}

// symbolsLink is one compile group's link with symbols, done on the first
// request for any of its binaries (again only after a cancelled attempt).
type symbolsLink struct {
	o    Options
	g    *compileGroup
	mu   sync.Mutex
	done bool
	err  error
}

// progressMu serialises progress lines: images are assembled in
// parallel, and the writer (a buffer, a pipe) need not be safe for that.
var progressMu sync.Mutex

func (o *Options) progress(format string, a ...any) {
	if o.Progress != nil {
		progressMu.Lock()
		defer progressMu.Unlock()
		fmt.Fprintf(o.Progress, format+"\n", a...)
	}
}

func (o *Options) platformsFor(s *catalog.Spec) []catalog.Platform {
	if len(o.Platforms) == 0 {
		return s.Platforms
	}
	return o.Platforms
}

// Run compiles and assembles every spec. It returns only complete results:
// any failure fails the whole stage.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Base == nil || o.Epoch.IsZero() || o.Version == "" {
		return nil, errors.New("build: Base, Epoch and Version are required")
	}
	work := o.WorkDir
	if work == "" {
		dir, err := os.MkdirTemp("", "darktower-build-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		work = dir
	}
	start := time.Now()
	bins, err := compileAll(ctx, o, work)
	if err != nil {
		return nil, err
	}
	res := &Result{Compile: time.Since(start), Images: make([]*Image, len(o.Specs))}
	if o.SymbolsDir != "" {
		res.symbols = map[binKey]*symbolsLink{}
		for _, g := range o.groups(work) {
			link := &symbolsLink{o: o, g: g}
			for _, s := range g.specs {
				res.symbols[binKey{s.Name, g.p}] = link
			}
		}
	}
	// Assembling is mostly gzip: one service per core.
	sem := make(chan struct{}, runtime.NumCPU())
	errs := make([]error, len(o.Specs))
	var wg sync.WaitGroup
	for i, s := range o.Specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			res.Images[i], errs[i] = assembleOrReuse(o, s, bins)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	res.Build = time.Since(start)
	return res, nil
}

// assembleOrReuse takes s's image from the previous build when its build
// key is unchanged, and assembles it otherwise.
func assembleOrReuse(o Options, s *catalog.Spec, bins map[binKey]string) (*Image, error) {
	t := time.Now()
	key, err := buildKey(o, s, bins)
	if err != nil {
		return nil, err
	}
	if img := o.Previous.reuse(s.Name, key); img != nil {
		img.Reused = true
		o.progress("build: %-20s unchanged, reused %s", s.Name, shortDigest(img.Digest))
		return img, nil
	}
	img, err := assemble(o, s, bins)
	if err != nil {
		return nil, fmt.Errorf("assembling %s: %w", s.Name, err)
	}
	img.BuildKey = key
	o.progress("build: %-20s assembled %s in %s", s.Name, shortDigest(img.Digest), time.Since(t).Round(time.Millisecond))
	return img, nil
}

// SymbolsBinary is service's binary for p linked with its symbol table,
// in Options.SymbolsDir: its compile group is linked on the first request
// (one go build for every binary of the group, from the build cache).
func (r *Result) SymbolsBinary(ctx context.Context, service string, p catalog.Platform) (string, error) {
	link, ok := r.symbols[binKey{service, p}]
	if !ok {
		return "", fmt.Errorf("build: no binary with symbols for %s %s (Options.SymbolsDir unset, or not built)", service, p)
	}
	link.mu.Lock()
	defer link.mu.Unlock()
	if !link.done {
		t := time.Now()
		link.err = linkWithSymbols(ctx, link.o, link.g)
		// A cancelled caller's attempt is not the group's result.
		link.done = ctx.Err() == nil
		if link.err == nil {
			link.o.progress("build: %s linked %s with symbols (for the scan) in %s", link.g.p, strings.Join(link.g.names(), ", "), time.Since(t).Round(time.Millisecond))
		}
	}
	if link.err != nil {
		return "", link.err
	}
	return filepath.Join(link.o.SymbolsDir, filepath.Base(link.g.out), path.Base(link.g.specFor(service).Main)), nil
}

type binKey struct {
	service  string
	platform catalog.Platform
}

// compileGroup is one `go build` invocation: every main package of one
// module for one platform. One invocation per group (not per service)
// shares the package loading and never compiles a dependency twice.
type compileGroup struct {
	module string
	p      catalog.Platform
	mains  []string        // unique main packages, unique base names
	specs  []*catalog.Spec // the specs these mains serve
	out    string          // directory `go build -o` writes into
}

// groups splits the work into compileGroups, in a stable order.
func (o *Options) groups(work string) []*compileGroup {
	var gs []*compileGroup
	byKey := map[string][]*compileGroup{}
	for _, s := range o.Specs {
		for _, p := range o.platformsFor(s) {
			key := s.Module + "|" + p.String()
			var g *compileGroup
			for _, cand := range byKey[key] {
				if slices.Contains(cand.mains, s.Main) || !slices.ContainsFunc(cand.mains, func(m string) bool { return path.Base(m) == path.Base(s.Main) }) {
					g = cand
					break
				}
			}
			if g == nil {
				g = &compileGroup{module: s.Module, p: p, out: filepath.Join(work, fmt.Sprintf("g%d-%s-%s", len(gs), p.OS, p.Arch)) + string(filepath.Separator)}
				gs = append(gs, g)
				byKey[key] = append(byKey[key], g)
			}
			if !slices.Contains(g.mains, s.Main) {
				g.mains = append(g.mains, s.Main)
			}
			g.specs = append(g.specs, s)
		}
	}
	return gs
}

// compileAll builds every (service, platform) binary, o.Jobs go builds at
// a time (default 1: each go build already uses every core).
func compileAll(ctx context.Context, o Options, work string) (map[binKey]string, error) {
	n := o.Jobs
	if n <= 0 {
		n = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, n)
	var mu sync.Mutex
	bins := map[binKey]string{}
	var errs []error
	var wg sync.WaitGroup
	for _, g := range o.groups(work) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			t := time.Now()
			err := compile(ctx, o, g)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				cancel() // one failure fails the stage; stop the rest early
				return
			}
			for _, s := range g.specs {
				bins[binKey{s.Name, g.p}] = filepath.Join(g.out, path.Base(s.Main))
			}
			o.progress("build: %s compiled %s in %s", g.p, strings.Join(g.names(), ", "), time.Since(t).Round(time.Millisecond))
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		sort.Slice(errs, func(i, k int) bool { return errs[i].Error() < errs[k].Error() })
		return nil, errors.Join(errs...)
	}
	return bins, ctx.Err()
}

// opskitPkg is where the services keep their link-time version variables.
const opskitPkg = "github.com/darktower/delivery/services/internal/opskit"

func (g *compileGroup) names() []string {
	var names []string
	for _, s := range g.specs {
		names = append(names, s.Name)
	}
	return names
}

func (g *compileGroup) specFor(service string) *catalog.Spec {
	for _, s := range g.specs {
		if s.Name == service {
			return s
		}
	}
	return nil
}

// buildArgs is the group's `go build` command line, writing into out.
func (o Options) buildArgs(g *compileGroup, ldflags, out string) []string {
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out}
	if len(o.GoTags) > 0 {
		args = append(args, "-tags", strings.Join(o.GoTags, ","))
	}
	return append(args, g.mains...)
}

func (o Options) ldflags() string {
	return fmt.Sprintf("-s -w -buildid= -X %s.Version=%s -X %s.Revision=%s", opskitPkg, o.Version, opskitPkg, o.Revision)
}

func compile(ctx context.Context, o Options, g *compileGroup) error {
	modDir := filepath.Join(o.Root, g.module)
	for _, s := range g.specs {
		if !s.Relative() {
			continue // a dependency's package: go build resolves it through the module's go.mod
		}
		if _, err := os.Stat(filepath.Join(modDir, s.Main)); err != nil {
			return fmt.Errorf("%s: main package %s not found in %s (spec %s)", s.Name, s.Main, modDir, s.File)
		}
	}
	return goBuild(ctx, modDir, g, g.names(), o.buildArgs(g, o.ldflags(), g.out))
}

// linkWithSymbols is the group's link again with the symbol table (-s
// dropped; -w still drops DWARF, which govulncheck does not read and which
// makes the link slower), into Options.SymbolsDir.
func linkWithSymbols(ctx context.Context, o Options, g *compileGroup) error {
	ldflags := strings.Replace(o.ldflags(), "-s -w ", "-w ", 1)
	out := filepath.Join(o.SymbolsDir, filepath.Base(g.out)) + string(filepath.Separator)
	return goBuild(ctx, filepath.Join(o.Root, g.module), g, g.names(), o.buildArgs(g, ldflags, out))
}

func goBuild(ctx context.Context, modDir string, g *compileGroup, names, args []string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+g.p.OS, "GOARCH="+g.p.Arch, "GOFLAGS=-mod=readonly")
	if output, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: cancelled", strings.Join(names, ", "), g.p)
		}
		return fmt.Errorf("%s %s: go build failed: %v\n%s", strings.Join(names, ", "), g.p, err, strings.TrimSpace(string(output)))
	}
	return nil
}

// appLayer holds only the binary (and its parent directories), root-owned,
// mode 0755, mtime = epoch.
func appLayer(binaryPath, binPathInImage string, epoch time.Time) (v1.Layer, error) {
	body, err := os.ReadFile(binaryPath)
	if err != nil {
		return nil, err
	}
	rel := strings.TrimPrefix(binPathInImage, "/")
	var entries []tarEntry
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		entries = append(entries, tarEntry{path: strings.Join(parts[:i], "/"), mode: 0o755, dir: true})
	}
	entries = append(entries, tarEntry{path: rel, mode: 0o755, body: body})
	return tarLayer(entries, epoch)
}

func assemble(o Options, s *catalog.Spec, bins map[binKey]string) (*Image, error) {
	labels := map[string]string{
		"org.opencontainers.image.title":       s.Name,
		"org.opencontainers.image.description": s.Description,
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.created":     o.Epoch.UTC().Format(time.RFC3339),
		"org.opencontainers.image.base.name":   o.Base.Name,
		"org.opencontainers.image.base.digest": o.Base.Digest.String(),
	}
	for k, v := range s.Labels {
		labels[k] = v
	}
	ports := map[string]struct{}{}
	for _, p := range s.Ports {
		ports[p] = struct{}{}
	}
	out := &Image{Service: s.Name, Tag: s.Name + ":" + TagFor(o.Version), BaseName: o.Base.Name, BaseDigest: o.Base.Digest.String()}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.platformsFor(s) {
		base, err := o.Base.Image(p)
		if err != nil {
			return nil, err
		}
		layer, err := appLayer(bins[binKey{s.Name, p}], s.Binary, o.Epoch)
		if err != nil {
			return nil, err
		}
		img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{
			CreatedBy: "darktower build-all: " + s.Binary, Comment: s.Main}})
		if err != nil {
			return nil, err
		}
		img, err = setConfig(img, func(cf *v1.ConfigFile) {
			cf.OS, cf.Architecture = p.OS, p.Arch
			cf.Config.User = "65532:65532"
			cf.Config.Entrypoint = []string{s.Binary}
			cf.Config.Cmd = nil
			cf.Config.ExposedPorts = ports
			cf.Config.Labels = labels
			cf.Config.WorkingDir = "/home/nonroot"
		}, o.Epoch)
		if err != nil {
			return nil, err
		}
		img = mutate.Annotations(img, labels).(v1.Image)
		pi, err := describe(p, img)
		if err != nil {
			return nil, err
		}
		out.Platforms = append(out.Platforms, pi)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}}})
	}
	out.Index = mutate.Annotations(idx, labels).(v1.ImageIndex)
	d, err := out.Index.Digest()
	if err != nil {
		return nil, err
	}
	out.Digest = d.String()
	return out, nil
}

func describe(p catalog.Platform, img v1.Image) (PlatformImage, error) {
	pi := PlatformImage{Platform: p, image: img}
	d, err := img.Digest()
	if err != nil {
		return pi, err
	}
	pi.Digest = d.String()
	layers, err := img.Layers()
	if err != nil {
		return pi, err
	}
	pi.Layers = len(layers)
	for _, l := range layers {
		c, err := l.Size()
		if err != nil {
			return pi, err
		}
		u, err := uncompressedSize(l)
		if err != nil {
			return pi, err
		}
		pi.CompressedSize += c
		pi.UncompressedSize += u
	}
	return pi, nil
}

// uncompressedSizes remembers each layer's size by digest: every service
// shares the base's layers, which would otherwise be decompressed again
// for each service and platform.
var uncompressedSizes sync.Map // v1.Hash → int64

func uncompressedSize(l v1.Layer) (int64, error) {
	d, err := l.Digest()
	if err != nil {
		return 0, err
	}
	if n, ok := uncompressedSizes.Load(d); ok {
		return n.(int64), nil
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err == nil {
		uncompressedSizes.Store(d, n)
	}
	return n, err
}

func shortDigest(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}

// ImageFor returns the built image for platform p.
func (i *Image) ImageFor(p catalog.Platform) (v1.Image, error) {
	for _, pi := range i.Platforms {
		if pi.Platform == p && pi.image != nil {
			return pi.image, nil
		}
	}
	return nil, fmt.Errorf("%s was not built for %s", i.Service, p)
}

// TagFor turns a version into an OCI tag: a tag takes only [A-Za-z0-9_.-]
// (at most 128, not starting with . or -), so semver build metadata
// ("0.0.0-dev+abc") becomes "0.0.0-dev-abc", as docker/metadata-action does.
func TagFor(version string) string {
	b := []byte(version)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '-'
		}
	}
	t := strings.TrimLeft(string(b), ".-")
	if len(t) > 128 {
		t = t[:128]
	}
	if t == "" {
		t = "latest"
	}
	return t
}

package flow

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/catalog"
	"github.com/darktower/delivery/pipelines/registry"
	"github.com/darktower/delivery/pipelines/scan"
)

// probeTimeout bounds what --vuln-source auto and --base auto try before
// falling back: an air-gapped network may drop packets instead of
// refusing them.
const probeTimeout = 2 * time.Minute

// vulnSource is the source that judges the build and its data.
type vulnSource struct {
	name, version string
	date          time.Time
	trivy         *scan.DBInfo     // SourceTrivy: the open DB
	goData        *scan.GoVulnData // govulncheck's data (SourceTrivy: once govulnData has run)
	cacheDir      string
	once          sync.Once
	goErr         error
}

// govulnData is the pinned Go vulnerability database for govulncheck.
// Under Trivy's DB it is fetched the first time a Go finding needs its
// reachability: a build without Go findings needs no module proxy.
func (s *vulnSource) govulnData(ctx context.Context, say func(string, ...any)) (*scan.GoVulnData, error) {
	s.once.Do(func() {
		if s.goData != nil {
			return
		}
		if s.goData, s.goErr = scan.PrepareGoVulnData(ctx, s.cacheDir, scan.GoVulnDBVersion); s.goErr != nil {
			s.goErr = fmt.Errorf("the Go vulnerability database cannot be had: %w", s.goErr)
			say("scan: warning: Go findings' reachability is not checked: %v", s.goErr)
		} else {
			say("scan: Go findings' reachability by govulncheck against %s", s.goData)
		}
	})
	return s.goData, s.goErr
}

// openVulnSource picks the vulnerability source (--vuln-source) and opens
// it. auto takes Trivy's DB when it can be had and otherwise — except for
// a build that publishes, which must choose — the Go vulnerability
// database, announced loudly.
func openVulnSource(ctx context.Context, o BuildAllOptions, say func(string, ...any)) (*vulnSource, error) {
	choice, err := scan.ParseSource(o.VulnSource)
	if err != nil {
		return nil, err
	}
	if o.VulnDB != "" && choice == scan.SourceGoVulnDB {
		return nil, fmt.Errorf("--vuln-db %s is a Trivy DB and --vuln-source go-vulndb does not read one: drop one of them", o.VulnDB)
	}
	cacheDir := o.DBCacheDir
	if cacheDir == "" {
		cacheDir = scan.DefaultCacheDir()
	}
	maxAge := o.DBMaxAge
	if maxAge == 0 {
		maxAge = 72 * time.Hour
	}
	s := &vulnSource{name: choice, cacheDir: cacheDir}
	var why string
	if choice != scan.SourceGoVulnDB {
		limit := probeTimeout
		if choice == scan.SourceTrivy || o.VulnDB != "" {
			limit = 24 * time.Hour // asked for: no time limit of ours
		}
		tctx, cancel := context.WithTimeout(ctx, limit)
		info, err := scan.OpenDB(tctx, scan.DBOptions{Dir: o.VulnDB, CacheDir: cacheDir, Repository: o.DBRepository, MaxAge: maxAge})
		cancel()
		switch {
		case err == nil:
			s.name, s.trivy = scan.SourceTrivy, info
			s.version, s.date = fmt.Sprintf("Trivy DB schema %d", info.Version), info.UpdatedAt
			say("scan: Trivy DB %s (updated %s)", info.Dir, info.UpdatedAt.Format(time.RFC3339))
		case choice == scan.SourceTrivy || o.VulnDB != "" || !errors.Is(err, scan.ErrNoDB):
			return nil, err
		case o.Push != "" || o.release:
			return nil, fmt.Errorf("%w\n(--vuln-source auto falls back to the Go vulnerability database only for builds that do not publish: "+
				"a published image is judged by Trivy's DB unless --vuln-source go-vulndb says otherwise)", err)
		default:
			s.name, why = scan.SourceGoVulnDB, strings.Join(strings.Fields(scan.NoDBCause(err)), " ") // one line
		}
	}
	if s.name == scan.SourceTrivy {
		return s, nil
	}
	goData, err := scan.PrepareGoVulnData(ctx, cacheDir, scan.GoVulnDBVersion)
	if err != nil {
		if why != "" {
			return nil, fmt.Errorf("no vulnerability source: Trivy's DB cannot be had (%s), and neither can the Go vulnerability database: %w", why, err)
		}
		return nil, err
	}
	s.version, s.date, s.goData = goData.Module+"@"+goData.Version, goData.Time, goData
	announceGoVulnDB(say, goData, why, cacheDir)
	return s, nil
}

// announceGoVulnDB is the notice that the Go vulnerability database judges
// the build: what it covers, what it does not, and why it was chosen.
func announceGoVulnDB(say func(string, ...any), d *scan.GoVulnData, why, cacheDir string) {
	line := strings.Repeat("=", 78)
	say("%s", line)
	say("VULNERABILITY SOURCE: go-vulndb, the Go vulnerability database %s", d)
	say("  (the module, through the Go module proxy; cached in %s), judged by govulncheck", filepath.Join(cacheDir, "govulndb"))
	if why != "" {
		say("  chosen because Trivy's DB cannot be had: %s", why)
	} else {
		say("  chosen by --vuln-source go-vulndb")
	}
	say("  covers the Go modules and standard library in each binary; it has no severities:")
	say("  a reachable vulnerable symbol blocks, unreachable advisories are reported")
	say("  NOT COVERED: the base image's OS packages (named in summary.md)")
	say("  to choose: --vuln-source trivy|go-vulndb|auto, --vuln-db DIR (a prepared Trivy DB)")
	say("%s", line)
}

// resolveBase resolves --base. auto (the default) is the locked base, and
// — when that is neither cached nor fetchable and the build does not
// publish — the built-in skeleton, announced.
func resolveBase(ctx context.Context, o BuildAllOptions, specs []*catalog.Spec, platforms []catalog.Platform, epoch time.Time, env func(string) string, say func(string, ...any)) (*build.Base, error) {
	value := o.Base
	auto := value == "" || value == build.BaseAuto
	if auto {
		value = build.BaseLocked
	}
	specBase, err := commonBase(specs)
	if err != nil && value == build.BaseLocked {
		return nil, err
	}
	cacheDir := o.CacheDir
	if cacheDir == "" {
		cacheDir = build.DefaultCacheDir()
	}
	bo := build.BaseOptions{Value: value, SpecBase: specBase, ImagesDir: filepath.Join(o.Root, "images"),
		Platforms: platforms, CABundle: o.CABundle, Epoch: epoch, Keychain: registry.Keychain(env, o.Push), CacheDir: cacheDir}
	if !auto {
		return build.ResolveBase(ctx, bo)
	}
	tctx, cancel := context.WithTimeout(ctx, probeTimeout)
	base, err := build.ResolveBase(tctx, bo)
	cancel()
	if err == nil || o.Push != "" || o.release || ctx.Err() != nil {
		return base, err
	}
	cause, _, _ := strings.Cut(err.Error(), "\n")
	say("BASE: skeleton (built in, no network): the locked base cannot be had (from the cache %s or its registry): %s", cacheDir, cause)
	say("  the skeleton has distroless/static's files and no OS packages; --base locked insists on the pinned one")
	bo.Value = build.BaseSkeleton
	return build.ResolveBase(ctx, bo)
}

func countReachable(vulns []*scan.GoVuln) int {
	n := 0
	for _, v := range vulns {
		if v.Reachability == scan.Reachable {
			n++
		}
	}
	return n
}

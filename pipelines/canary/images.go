package canary

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/deploy"
	"github.com/darktower/delivery/pipelines/flow"
	"github.com/darktower/delivery/pipelines/sbom"
	"github.com/darktower/delivery/pipelines/scan"
)

// loadPlatformImages builds Flagger's and Traefik's images with build-all
// over images/platform for the nodes' platform (what did not change is
// reused from the stage caches), loads them into the nodes the way a
// preview loads the services' build (deploy.LoadImages) and sets in's
// image references to them, pinned by digest. It reports each image's
// digest, SBOMs, scan verdict and signature.
func loadPlatformImages(ctx context.Context, o InstallOptions, in *Installed, say func(string, ...any)) (*build.Manifest, error) {
	step := time.Now()
	b := platformBuildOptions(o)
	if b.Out == "" {
		dir, err := os.MkdirTemp("", "darktower-canary-images-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		b.Out = dir
	}
	say("building Flagger %s and Traefik %s through the pipeline (build-all --images %s --platforms %s) into %s",
		in.FlaggerVersion, in.TraefikVersion, b.Images, b.Platforms[0], b.Out)
	m, err := flow.BuildAll(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("the canaries' platform images (build-all --images %s): %w", b.Images, err)
	}
	for _, line := range platformReport(m, b.Platforms[0]) {
		say("%s", line)
	}
	refs, err := deploy.LoadImages(o.Cluster, b.Out, m, b.Platforms[0], "")
	if err != nil {
		return nil, err
	}
	for _, t := range []struct {
		tool
		ref *string
	}{{flaggerTool, &in.FlaggerImage}, {traefikTool, &in.TraefikImage}} {
		if *t.ref = refs[t.Name]; *t.ref == "" {
			return nil, fmt.Errorf("the build of %s has no %s image (its spec: %s/%s.yaml)", b.Images, t.Name, b.Images, t.Name)
		}
	}
	say("flagger %s and traefik %s loaded as %s and %s (%s)", in.FlaggerVersion, in.TraefikVersion, in.FlaggerImage, in.TraefikImage,
		time.Since(step).Round(100*time.Millisecond))
	return m, nil
}

// platformBuildOptions are o.Images completed: the platform set, the
// nodes' platform, the machine's SBOM and stage caches.
func platformBuildOptions(o InstallOptions) flow.BuildAllOptions {
	b := o.Images
	b.Root = o.Root
	if b.Images == "" {
		b.Images = flow.PlatformImages
	}
	b.Services = nil
	b.Platforms = []string{deploy.NodePlatform()}
	b.Push, b.Load = "", false
	if b.Progress == nil {
		b.Progress = o.Progress
	}
	if b.SBOMCacheDir == "" {
		b.SBOMCacheDir = sbom.DefaultCacheDir()
	}
	if b.StageCacheDir == "" {
		b.StageCacheDir = flow.DefaultStageCacheDir()
	}
	if b.Jobs == 0 {
		b.Jobs = 2
	}
	return b
}

// platformReport is one line per image of m: its platform image's digest
// (and the index's), SBOMs, the scan's verdict and the signature.
func platformReport(m *build.Manifest, platform string) []string {
	gate := "no scan"
	if s := m.Scan; s != nil {
		gate = s.Threshold + " gate"
		if s.Source == scan.SourceGoVulnDB {
			gate = "reachability gate"
		}
		gate += " (" + s.Source + " " + s.SourceVersion + ", data of " + s.DBUpdatedAt + ")"
	}
	var lines []string
	for _, img := range m.Images {
		for _, p := range img.Platforms {
			if p.Platform.String() != platform {
				continue
			}
			sboms := "no SBOM"
			if p.SBOM != nil {
				sboms = fmt.Sprintf("SBOMs %s, %s (%d packages)", p.SBOM.SPDX, p.SBOM.CycloneDX, p.SBOM.Packages)
			}
			verdict := "not scanned"
			if v := p.Vulnerabilities; v != nil {
				word := "passed"
				if v.Blocking > 0 {
					word = "BLOCKED"
				}
				verdict = fmt.Sprintf("%s the %s: %d critical, %d high, %d medium, %d low, %d unknown, %d blocking",
					word, gate, v.Critical, v.High, v.Medium, v.Low, v.Unknown, v.Blocking)
			}
			signed := "not signed"
			if s := img.Signature; s != nil {
				signed = fmt.Sprintf("signed (%s) with %d attestations (%s)", s.Signature, len(s.Predicates), s.Key)
				if s.Development {
					signed += ", a DEVELOPMENT key"
				}
			}
			lines = append(lines, fmt.Sprintf("%s: image %s digest %s (index %s, %.1f MB compressed); %s; scan %s; %s",
				img.Service, p.Platform, p.Digest, img.Digest, float64(p.CompressedSize)/1e6, sboms, verdict, signed))
		}
	}
	if len(lines) == 0 {
		lines = append(lines, "no "+platform+" image in the build: "+strings.Join(serviceNames(m), ", "))
	}
	return lines
}

func serviceNames(m *build.Manifest) []string {
	var names []string
	for _, img := range m.Images {
		names = append(names, img.Service)
	}
	return names
}

package flow

import (
	"context"
	"errors"
	"fmt"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/promote"
)

// ReleaseOptions are release's inputs: the tag being released and the
// build-all options it runs with.
type ReleaseOptions struct {
	Tag string
	BuildAllOptions
}

// Release builds, scans, signs and publishes the images of a release tag:
// build-all stamped with the tag, refusing what a release must not have
// (no registry, no signature, the development key, a version other than
// the tag). Promotion to production (package promote) follows from the
// pushed digests.
func Release(ctx context.Context, o ReleaseOptions) (*build.Manifest, error) {
	o.release = true
	if err := errors.Join(append([]error{checkRelease(o)}, publishProblems(ctx, o.BuildAllOptions)...)...); err != nil {
		return nil, err
	}
	o.Version = o.Tag
	return BuildAll(ctx, o.BuildAllOptions)
}

// checkRelease refuses a release's bad inputs before anything is built.
func checkRelease(o ReleaseOptions) error {
	var problems []error
	if !promote.ReleaseTag.MatchString(o.Tag) {
		problems = append(problems, fmt.Errorf("--tag %q is not a release tag: use vMAJOR.MINOR.PATCH or vMAJOR.MINOR.PATCH-PRERELEASE, e.g. v1.4.0", o.Tag))
	}
	if o.Push == "" {
		problems = append(problems, errors.New("--push is required: a release publishes its images, e.g. --push ghcr.io/darktower"))
	}
	if o.NoSign {
		problems = append(problems, errors.New("--no-sign: a release is always signed"))
	}
	if o.Version != "" && o.Version != o.Tag {
		problems = append(problems, fmt.Errorf("--version %q differs from --tag %q: a release is stamped with its tag (drop --version)", o.Version, o.Tag))
	}
	return errors.Join(problems...)
}

// errDevelopmentKey refuses to publish (--push, release) what this
// machine's development key signed: a published signature nobody can
// verify is worse than none.
var errDevelopmentKey = errors.New("no signing key for a published image — what is pushed is not signed with this machine's development key (nobody could verify it): pass --key FILE or env://NAME (password in COSIGN_PASSWORD), or run in GitHub Actions with permissions id-token: write (keyless)")

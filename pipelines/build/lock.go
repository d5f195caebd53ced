package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// LockFile is where images/ records the digest each base reference is
// pinned to. Builds with --base locked (the default) use only these
// digests; `update-base` is the one thing that moves them.
const LockFile = "base.lock.json"

// Lock is the content of images/base.lock.json.
type Lock struct {
	Comment string               `json:"comment,omitempty"`
	Bases   map[string]LockEntry `json:"bases"`
}

// LockEntry pins one base reference (as the specs spell it) to a digest.
type LockEntry struct {
	Digest   string `json:"digest"`   // the image index digest
	Resolved string `json:"resolved"` // when update-base (or a person) last resolved it, RFC 3339
}

const lockComment = "Written by `go run . update-base`; builds with --base locked (the default) use these digests."

// ReadLock reads dir/base.lock.json; a missing file is an empty lock.
func ReadLock(dir string) (*Lock, error) {
	path := filepath.Join(dir, LockFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Lock{Bases: map[string]LockEntry{}}, nil
	}
	if err != nil {
		return nil, err
	}
	var l Lock
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("%s: %w (fix it by hand or run `go run . update-base`)", path, err)
	}
	if l.Bases == nil {
		l.Bases = map[string]LockEntry{}
	}
	for ref, e := range l.Bases {
		if _, err := name.NewDigest(ref + "@" + e.Digest); err != nil {
			return nil, fmt.Errorf("%s: entry %q: %w (run `go run . update-base`)", path, ref, err)
		}
	}
	return &l, nil
}

// Pinned returns ref's locked digest reference (repository@digest).
func (l *Lock) Pinned(dir, ref string) (name.Digest, error) {
	e, ok := l.Bases[ref]
	if !ok {
		return name.Digest{}, fmt.Errorf("base %s is not pinned in %s: run `go run . update-base` (online), or build with --base skeleton or --base oci-layout:PATH",
			ref, filepath.Join(dir, LockFile))
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return name.Digest{}, err
	}
	return r.Context().Digest(e.Digest), nil
}

// Write writes the lock with stable key order (encoding/json sorts maps).
func (l *Lock) Write(dir string) error {
	l.Comment = lockComment
	return writeJSONAtomically(filepath.Join(dir, LockFile), l)
}

// BaseChange is what update-base did to one reference.
type BaseChange struct {
	Ref      string
	Old, New string // digests; Old is "" for a new entry
}

// UpdateLock resolves every reference (tags, as the specs name them) to
// its current digest and records them in dir's lock. Nothing is written
// unless every reference resolves.
func UpdateLock(ctx context.Context, dir string, refs []string, kc authn.Keychain, now time.Time, progress io.Writer) ([]BaseChange, error) {
	l, err := ReadLock(dir)
	if err != nil {
		return nil, err
	}
	sort.Strings(refs)
	bases := map[string]LockEntry{} // only what the specs name: stale pins go
	var changes []BaseChange
	for _, ref := range refs {
		r, err := name.ParseReference(ref)
		if err != nil {
			return nil, fmt.Errorf("base %q: %w", ref, err)
		}
		desc, err := remote.Head(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc))
		if err != nil {
			return nil, fmt.Errorf("update-base: cannot resolve %s: %w (update-base needs the registry; nothing was written)", ref, err)
		}
		if !desc.MediaType.IsIndex() {
			return nil, fmt.Errorf("update-base: %s is a single image (%s), not a multi-platform index; pin a reference that lists linux/amd64 and linux/arm64", ref, desc.MediaType)
		}
		c := BaseChange{Ref: ref, Old: l.Bases[ref].Digest, New: desc.Digest.String()}
		changes = append(changes, c)
		if progress != nil {
			switch c.Old {
			case c.New:
				fmt.Fprintf(progress, "update-base: %s unchanged at %s\n", ref, c.New)
			case "":
				fmt.Fprintf(progress, "update-base: %s pinned to %s\n", ref, c.New)
			default:
				fmt.Fprintf(progress, "update-base: %s %s -> %s\n", ref, c.Old, c.New)
			}
		}
		bases[ref] = l.Bases[ref]
		if c.Old != c.New {
			bases[ref] = LockEntry{Digest: c.New, Resolved: now.UTC().Format(time.RFC3339)}
		}
	}
	l.Bases = bases
	return changes, l.Write(dir)
}

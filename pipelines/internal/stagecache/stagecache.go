// Package stagecache keeps a stage's outputs by a content key: one
// directory per key holding a JSON record, written whole or not at all,
// and pruned when unused for a month (the layout the sbom stage's cache
// uses). The scan stage keeps raw findings in it, the sign stage
// signatures and attestations.
package stagecache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// MaxAge: an entry not used for this long is removed by Prune.
const MaxAge = 30 * 24 * time.Hour

const record = "record.json"

var entryName = regexp.MustCompile(`^([0-9a-f]{64}|\.new-[0-9]+)$`)

// Key hashes the lines that name everything an output depends on.
func Key(lines ...string) string {
	h := sha256.New()
	for _, l := range lines {
		io.WriteString(h, l)
		io.WriteString(h, "\n")
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Get decodes the record under key into v; an error wrapping
// fs.ErrNotExist means there is none (or dir is "").
func Get(dir, key string, v any) error {
	if dir == "" {
		return fs.ErrNotExist
	}
	path := filepath.Join(dir, key, record)
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	now := time.Now()
	os.Chtimes(path, now, now) // used: kept by Prune
	return nil
}

// Put stores v under key: written aside, then renamed into place (a
// concurrent build's identical entry wins).
func Put(dir, key string, v any) error {
	if dir == "" {
		return nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(dir, ".new-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, record), raw, 0o644); err != nil {
		return err
	}
	final := filepath.Join(dir, key)
	os.RemoveAll(final) // an unusable entry being replaced
	if err := os.Rename(tmp, final); err != nil {
		if _, statErr := os.Stat(filepath.Join(final, record)); statErr == nil {
			return nil
		}
		return err
	}
	return nil
}

// Prune removes the entries last used before cutoff and what an
// interrupted build left half-written; nothing else in dir.
func Prune(dir string, cutoff time.Time) error { return PruneEntries(dir, record, cutoff) }

// PruneEntries is Prune for a cache of the same layout (digest-named
// entries, .new-N while written) whose last-use mark is the file recordName
// in each entry (touched on use; the entry's own time when it is missing).
func PruneEntries(dir, recordName string, cutoff time.Time) error {
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !entryName.MatchString(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		info, err := os.Stat(filepath.Join(path, recordName))
		if err != nil {
			info, err = e.Info()
		}
		if err == nil && info.ModTime().After(cutoff) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

package stagecache

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type rec struct{ A string }

func TestPutGetAndPrune(t *testing.T) {
	dir := t.TempDir()
	var got rec
	if err := Get(dir, Key("a"), &got); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing entry: %v", err)
	}
	if err := Get("", Key("a"), &got); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no cache directory: %v", err)
	}
	if Key("a", "b") == Key("ab") || Key("a") != Key("a") {
		t.Fatal("keys must separate their lines and be stable")
	}
	old, recent := Key("old"), Key("recent")
	for _, k := range []string{old, recent} {
		if err := Put(dir, k, rec{A: k}); err != nil {
			t.Fatal(err)
		}
	}
	if err := Get(dir, recent, &got); err != nil || got.A != recent {
		t.Fatalf("got %+v, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "user-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-2 * MaxAge)
	for _, p := range []string{filepath.Join(dir, old, record), filepath.Join(dir, "user-file")} {
		if err := os.Chtimes(p, long, long); err != nil {
			t.Fatal(err)
		}
	}
	if err := Prune(dir, time.Now().Add(-MaxAge)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{old: false, recent: true, "user-file": true} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != want {
			t.Errorf("%s: present %v after pruning, want %v", name, err == nil, want)
		}
	}
	// A corrupt record is an error that is not "missing".
	if err := os.WriteFile(filepath.Join(dir, recent, record), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Get(dir, recent, &got); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("corrupt record: %v", err)
	}
}

package scan

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	govulncheck "golang.org/x/vuln/scan"
)

// GoVulnData is the pinned golang.org/x/vulndb laid out as the Go
// vulnerability database's v1 API (https://go.dev/security/vuln/database#api):
// index/db.json, index/modules.json, index/vulns.json and ID/<id>.json —
// what govulncheck reads from a -db file:// directory. The module holds
// the entries (data/osv) but not the index.
type GoVulnData struct {
	Module, Version string
	Time            time.Time // the version's commit time: the data's date
	Dir             string    // the v1 layout
}

// String names the data for notices and reports.
func (d *GoVulnData) String() string {
	return fmt.Sprintf("%s@%s (%s)", d.Module, d.Version, d.Time.UTC().Format("2006-01-02"))
}

// fetchGoVulnDB downloads golang.org/x/vulndb at version through the Go
// module proxy (the go command's GOPROXY; the module cache keeps it) and
// returns its directory and commit time.
func fetchGoVulnDB(ctx context.Context, version string) (dir string, t time.Time, err error) {
	if version == "" {
		version = GoVulnDBVersion
	}
	cmd := execGo(ctx, "mod", "download", "-json", GoVulnDBModule+"@"+version)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var dl struct{ Dir, Info, Error string }
	if err := json.Unmarshal(stdout.Bytes(), &dl); err != nil || dl.Error != "" || runErr != nil {
		return "", time.Time{}, fmt.Errorf("%w: fetching %s@%s through the Go module proxy (GOPROXY) failed: %v %s %s; "+
			"make the proxy (or a mirror of it) reachable, or put the module in the module cache (GOMODCACHE)",
			ErrNoDB, GoVulnDBModule, version, runErr, dl.Error, bytes.TrimSpace(stderr.Bytes()))
	}
	var info struct{ Time time.Time }
	raw, err := os.ReadFile(dl.Info)
	if err == nil {
		err = json.Unmarshal(raw, &info)
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%s@%s: reading its version info: %w", GoVulnDBModule, version, err)
	}
	return dl.Dir, info.Time, nil
}

// PrepareGoVulnData fetches golang.org/x/vulndb at version ("" = the
// pinned GoVulnDBVersion) and lays it out for govulncheck under
// cacheDir/govulndb/VERSION, once per version (a module version never
// changes).
func PrepareGoVulnData(ctx context.Context, cacheDir, version string) (*GoVulnData, error) {
	if version == "" {
		version = GoVulnDBVersion
	}
	if cacheDir == "" {
		cacheDir = DefaultCacheDir()
	}
	dir := filepath.Join(cacheDir, "govulndb", version)
	data := &GoVulnData{Module: GoVulnDBModule, Version: version, Dir: dir}
	if raw, err := os.ReadFile(filepath.Join(dir, "index", "db.json")); err == nil {
		var db struct{ Modified time.Time }
		if json.Unmarshal(raw, &db) == nil && !db.Modified.IsZero() {
			data.Time = db.Modified
			return data, nil
		}
	}
	mod, t, err := fetchGoVulnDB(ctx, version)
	if err != nil {
		return nil, err
	}
	data.Time = t
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), version+".tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := writeV1(filepath.Join(mod, "data", "osv"), tmp, t); err != nil {
		return nil, fmt.Errorf("laying out %s@%s for govulncheck: %w", GoVulnDBModule, version, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another build laid it out meanwhile: theirs is the same data.
		if _, statErr := os.Stat(filepath.Join(dir, "index", "db.json")); statErr == nil {
			return data, nil
		}
		return nil, fmt.Errorf("laying out %s@%s for govulncheck in %s: %w (remove it and retry)", GoVulnDBModule, version, dir, err)
	}
	return data, nil
}

// osvHead is the part of an OSV entry the index needs.
type osvHead struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
	} `json:"affected"`
}

// writeV1 copies the OSV entries in src into out/ID and writes the index.
// The modules index leaves out each vuln's "fixed" (an optional hint that
// lets a client skip entries): govulncheck then reads every entry of a
// module it finds and decides from the entry's ranges itself.
func writeV1(src, out string, modified time.Time) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(out, "ID"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(out, "index"), 0o755); err != nil {
		return err
	}
	type vuln struct {
		ID       string    `json:"id"`
		Modified time.Time `json:"modified"`
		Aliases  []string  `json:"aliases,omitempty"`
	}
	type module struct {
		Path  string `json:"path"`
		Vulns []vuln `json:"vulns"`
	}
	modules := map[string]*module{}
	var vulns []vuln
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".json" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		var h osvHead
		if err := json.Unmarshal(raw, &h); err != nil {
			return fmt.Errorf("%s: %w", e.Name(), err)
		}
		if h.ID+".json" != e.Name() {
			return fmt.Errorf("%s holds entry %q (expected <id>.json)", e.Name(), h.ID)
		}
		if err := os.WriteFile(filepath.Join(out, "ID", e.Name()), raw, 0o644); err != nil {
			return err
		}
		v := vuln{ID: h.ID, Modified: h.Modified, Aliases: h.Aliases}
		vulns = append(vulns, v)
		for _, a := range h.Affected {
			m := modules[a.Package.Name]
			if m == nil {
				m = &module{Path: a.Package.Name}
				modules[a.Package.Name] = m
			}
			if !slices.ContainsFunc(m.Vulns, func(x vuln) bool { return x.ID == h.ID }) {
				m.Vulns = append(m.Vulns, vuln{ID: h.ID, Modified: h.Modified})
			}
		}
	}
	if len(vulns) == 0 {
		return fmt.Errorf("%s holds no OSV entries", src)
	}
	var mods []*module
	for _, m := range modules {
		mods = append(mods, m)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	write := func(name string, v any) error {
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(out, "index", name), raw, 0o644)
	}
	return errors.Join(write("db.json", map[string]time.Time{"modified": modified}), write("modules.json", mods), write("vulns.json", vulns))
}

// Reachability values: whether a binary holds the vulnerable code.
const (
	// A vulnerable function or method of the advisory is linked into the
	// binary (the linker keeps only code that can be called).
	Reachable = "reachable"
	// The module (or one of its packages) is in the binary, none of the
	// advisory's vulnerable symbols is.
	Unreachable = "unreachable"
)

// GoVuln is one advisory govulncheck found for one module of a binary.
type GoVuln struct {
	ID           string   `json:"id"`
	Aliases      []string `json:"aliases,omitempty"`
	Summary      string   `json:"summary,omitempty"`
	Module       string   `json:"module"`
	Version      string   `json:"version"`
	Fixed        string   `json:"fixed,omitempty"`
	Reachability string   `json:"reachability"`
	Symbols      []string `json:"symbols,omitempty"` // the vulnerable symbols in the binary
}

// Names says whether id is the advisory's ID or one of its aliases.
func (v *GoVuln) Names(id string) bool { return v.ID == id || slices.Contains(v.Aliases, id) }

// CheckBinary runs govulncheck (golang.org/x/vuln, in process) in binary
// mode on path against data: the binary's modules and Go version, and for
// each affected one whether its vulnerable symbols are in the binary. The
// binary needs its symbol table: for a stripped one govulncheck reports
// every advisory of a present module as if its symbols were there.
func CheckBinary(ctx context.Context, data *GoVulnData, path string) ([]*GoVuln, error) {
	var stdout, stderr bytes.Buffer
	cmd := govulncheck.Command(ctx, "-mode=binary", "-format=json", "-scan=symbol",
		"-db="+(&url.URL{Scheme: "file", Path: filepath.ToSlash(data.Dir)}).String(), path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("govulncheck %s: %w", path, err)
	}
	// With -format=json it exits 0 whatever it finds; an error is a failure.
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("govulncheck -mode=binary %s: %w\n%s", path, err, strings.TrimSpace(stderr.String()))
	}
	return parseGovulncheck(&stdout)
}

// parseGovulncheck reads govulncheck's JSON stream: the OSV entries, then
// findings at module, package and symbol precision — a symbol-level one
// means the symbol is in the binary.
func parseGovulncheck(r io.Reader) ([]*GoVuln, error) {
	type frame struct{ Module, Version, Package, Function, Receiver string }
	type message struct {
		OSV *struct {
			ID      string   `json:"id"`
			Aliases []string `json:"aliases"`
			Summary string   `json:"summary"`
		} `json:"osv"`
		Finding *struct {
			OSV          string   `json:"osv"`
			FixedVersion string   `json:"fixed_version"`
			Trace        []*frame `json:"trace"`
		} `json:"finding"`
	}
	type key struct{ id, module string }
	osvs := map[string]*GoVuln{}
	found := map[key]*GoVuln{}
	var order []key
	dec := json.NewDecoder(r)
	for {
		var m message
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("reading govulncheck's JSON output: %w", err)
		}
		if m.OSV != nil {
			osvs[m.OSV.ID] = &GoVuln{ID: m.OSV.ID, Aliases: m.OSV.Aliases, Summary: m.OSV.Summary}
		}
		if m.Finding == nil || len(m.Finding.Trace) == 0 {
			continue
		}
		f := m.Finding.Trace[0] // the vulnerable end of the trace
		k := key{m.Finding.OSV, f.Module}
		v := found[k]
		if v == nil {
			v = &GoVuln{ID: k.id, Module: f.Module, Version: f.Version, Fixed: m.Finding.FixedVersion, Reachability: Unreachable}
			if o := osvs[k.id]; o != nil {
				v.Aliases, v.Summary = o.Aliases, o.Summary
			}
			found[k] = v
			order = append(order, k)
		}
		if f.Function != "" {
			sym := f.Function
			if f.Receiver != "" {
				sym = strings.TrimPrefix(f.Receiver, "*") + "." + sym
			}
			sym = f.Package + "." + sym
			v.Reachability = Reachable
			if !slices.Contains(v.Symbols, sym) {
				v.Symbols = append(v.Symbols, sym)
			}
		}
	}
	var out []*GoVuln
	for _, k := range order {
		slices.Sort(found[k].Symbols)
		out = append(out, found[k])
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].ID != out[j].ID {
			return out[i].ID < out[j].ID
		}
		return out[i].Module < out[j].Module
	})
	return out, nil
}

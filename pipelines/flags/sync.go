package flags

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultPrefix is where the flags live in etcd; an environment adds
// "<env>/" (docs/operations/feature-flags.md: /darktower/flags/<env>/<flag>).
const DefaultPrefix = "/darktower/flags/"

// SyncOptions say where and how the catalogue is applied.
type SyncOptions struct {
	Endpoints []string
	Prefix    string // DefaultPrefix when empty; must end in "/"
	Env       string // optional: keys under Prefix+Env+"/", values from each flag's values.<env>
	DryRun    bool
	Timeout   time.Duration // per etcd call; 5 s when zero
}

// KeyPrefix is the etcd prefix the flags of o.Env live under.
func (o SyncOptions) KeyPrefix() (string, error) {
	p := o.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") {
		return "", fmt.Errorf("--prefix %q must start and end with / (e.g. %s)", p, DefaultPrefix)
	}
	if o.Env != "" {
		if !envPattern.MatchString(o.Env) {
			return "", fmt.Errorf("--env %q is not a lower-case environment name (e.g. prod, staging)", o.Env)
		}
		p += o.Env + "/"
	}
	return p, nil
}

// Change is one line of the diff.
type Change struct {
	Key      string
	Op       string // added, changed, removed, unchanged
	Old, New string
}

// Diff is what a sync found and (unless a dry run) applied.
type Diff struct {
	Prefix   string
	Revision int64 // etcd's revision after the sync (before it, on a dry run or no change)
	Changes  []Change
	Applied  bool
}

// Count returns how many changes have the operation.
func (d Diff) Count(op string) int {
	n := 0
	for _, c := range d.Changes {
		if c.Op == op {
			n++
		}
	}
	return n
}

// Print writes the diff, one key a line, and a summary.
func (d Diff) Print(w io.Writer) {
	for _, c := range d.Changes {
		switch c.Op {
		case "added":
			fmt.Fprintf(w, "  + %s = %s\n", c.Key, c.New)
		case "changed":
			fmt.Fprintf(w, "  ~ %s: %s -> %s\n", c.Key, c.Old, c.New)
		case "removed":
			fmt.Fprintf(w, "  - %s (was %s)\n", c.Key, c.Old)
		default:
			fmt.Fprintf(w, "    %s = %s (unchanged)\n", c.Key, c.New)
		}
	}
	verb := "applied"
	switch {
	case !d.Applied && d.Count("added")+d.Count("changed")+d.Count("removed") == 0:
		verb = "nothing to apply"
	case !d.Applied:
		verb = "dry run, nothing written"
	}
	fmt.Fprintf(w, "flags sync %s: %d added, %d changed, %d removed, %d unchanged (%s; etcd revision %d)\n",
		d.Prefix, d.Count("added"), d.Count("changed"), d.Count("removed"), d.Count("unchanged"), verb, d.Revision)
}

// Sync makes etcd's keys under the prefix equal the catalogue: absent
// flags are added, differing values set, keys no longer in the catalogue
// removed. It writes in one transaction guarded by the revisions it read,
// so a concurrent edit (an emergency `etcdctl put`) is never overwritten
// unseen: the sync fails and says to rerun. Running it twice changes
// nothing the second time.
func Sync(ctx context.Context, c *Catalog, o SyncOptions) (Diff, error) {
	prefix, err := o.KeyPrefix()
	if err != nil {
		return Diff{}, err
	}
	if len(o.Endpoints) == 0 {
		return Diff{}, errors.New("no etcd endpoints: give --etcd host:port[,host:port...]")
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: o.Endpoints, DialTimeout: timeout, Logger: quietLogger()})
	if err != nil {
		return Diff{}, fmt.Errorf("etcd %s: %w", strings.Join(o.Endpoints, ","), err)
	}
	defer cli.Close()

	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cli.Get(rctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return Diff{}, fmt.Errorf("reading %s from etcd %s (is it running and reachable?): %w", prefix, strings.Join(o.Endpoints, ","), err)
	}
	current := map[string]int64{} // key → mod revision
	old := map[string]string{}
	for _, kv := range resp.Kvs {
		if strings.Contains(strings.TrimPrefix(string(kv.Key), prefix), "/") {
			// Another environment's key (…/flags/prod/x under …/flags/):
			// not this sync's to change or remove.
			continue
		}
		current[string(kv.Key)] = kv.ModRevision
		old[string(kv.Key)] = string(kv.Value)
	}

	d := Diff{Prefix: prefix, Revision: resp.Header.Revision}
	want := map[string]bool{}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, f := range c.Flags {
		key := prefix + f.Name
		v := f.ValueFor(o.Env)
		want[key] = true
		prev, ok := old[key]
		switch {
		case !ok:
			d.Changes = append(d.Changes, Change{Key: key, Op: "added", New: v})
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
			ops = append(ops, clientv3.OpPut(key, v))
		case prev != v:
			d.Changes = append(d.Changes, Change{Key: key, Op: "changed", Old: prev, New: v})
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", current[key]))
			ops = append(ops, clientv3.OpPut(key, v))
		default:
			d.Changes = append(d.Changes, Change{Key: key, Op: "unchanged", Old: prev, New: v})
		}
	}
	for key, prev := range old {
		if !want[key] {
			d.Changes = append(d.Changes, Change{Key: key, Op: "removed", Old: prev})
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", current[key]))
			ops = append(ops, clientv3.OpDelete(key))
		}
	}
	sort.Slice(d.Changes, func(i, j int) bool { return d.Changes[i].Key < d.Changes[j].Key })
	if o.DryRun || len(ops) == 0 {
		return d, nil
	}
	wctx, cancel2 := context.WithTimeout(ctx, timeout)
	defer cancel2()
	tr, err := cli.Txn(wctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return d, fmt.Errorf("writing %d change(s) to etcd: %w", len(ops), err)
	}
	if !tr.Succeeded {
		return d, fmt.Errorf("etcd's keys under %s changed while the sync ran (someone wrote a flag); nothing was written: rerun the sync", prefix)
	}
	d.Applied = true
	d.Revision = tr.Header.Revision
	return d, nil
}

// quietLogger keeps etcd's client from logging its retries as JSON in the
// middle of the CLI's output; errors are returned instead.
func quietLogger() *zap.Logger { return zap.NewNop() }

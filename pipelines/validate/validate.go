// Package validate is server-side validation of infra/: every environment
// overlay is rendered with kustomize and server-side applied to a real
// Kubernetes API (the simulated cluster, or any cluster) — dry run first,
// then for real — so CRD schemas, admission (Pod Security, the platform's
// admission policies) and the controllers judge it; then every workload
// must become Ready and replace a deleted pod.
package validate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Overlays are infra/'s deployable renderings, in the order validated.
var Overlays = []string{"overlays/local", "overlays/preview", "overlays/staging", "overlays/prod"}

// PlatformComponents are infra/platform's kustomizations, dry-run applied
// after the overlays (they run the platform's operators' objects, whose
// workloads are not this repository's to wait for).
var PlatformComponents = []string{
	"platform/security", "platform/linkerd", "platform/external-secrets/stores/local",
	"platform/external-secrets/service-secrets", "platform/observability", "platform/database",
	"platform/chaos/operator", "platform/chaos", "platform/feature-flags",
}

// Options are the stage's inputs.
type Options struct {
	Infra    string          // the infra/ directory
	Overlays []string        // relative to Infra; nil: Overlays; empty non-nil: none
	Platform []string        // relative to Infra; nil: PlatformComponents; empty non-nil: none
	Client   *cluster.Client // the cluster to validate against
	CRDs     [][]byte        // CRDs to install first (sim.LoadCRDs)
	Within   time.Duration   // readiness deadline per step (default 90 s)
	Progress io.Writer
}

// Finding is one object the server refused or warned about.
type Finding struct {
	Overlay, Object, Reason string
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s: %s", f.Overlay, f.Object, f.Reason) }

// Report is what validation found; OK only when Findings and NotReady are
// empty.
type Report struct {
	Applied  int
	Findings []Finding
	NotReady []string // overlay: why workloads did not become (or stay) Ready
	// Unchecked: kinds the cluster does not serve (no CRD available), with
	// how many objects of each were left to the offline policy checks.
	Unchecked map[string]int
}

// OK reports whether everything was accepted and became Ready.
func (r *Report) OK() bool { return len(r.Findings) == 0 && len(r.NotReady) == 0 }

func (o *Options) say(f string, a ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, f+"\n", a...)
	}
}

// Render builds a kustomization into objects.
func Render(dir string) ([]*unstructured.Unstructured, error) {
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var docs [][]byte
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		docs = append(docs, y)
	}
	return cluster.ParseObjects(docs)
}

// Server validates every overlay against the cluster.
func Server(ctx context.Context, o Options) (*Report, error) {
	if o.Within == 0 {
		o.Within = 90 * time.Second
	}
	overlays := o.Overlays
	if overlays == nil {
		overlays = Overlays
	}
	if err := o.installPlatform(ctx); err != nil {
		return nil, err
	}
	rep := &Report{}
	for _, ov := range overlays {
		start := time.Now()
		objs, err := Render(filepath.Join(o.Infra, ov))
		if err != nil {
			return nil, err
		}
		namespaces, rest := splitNamespaces(objs)
		findings := refusals(ov, o.Client.Apply(ctx, namespaces, false))
		findings = append(findings, refusals(ov, o.Client.Apply(ctx, rest, true))...)
		if len(findings) > 0 {
			rep.Findings = append(rep.Findings, findings...)
			o.say("validate: %s: %d object(s) refused by the server", ov, len(findings))
			if err := o.remove(ctx, objs); err != nil {
				return nil, err
			}
			continue
		}
		findings = refusals(ov, o.Client.Apply(ctx, objs, false))
		rep.Findings = append(rep.Findings, findings...)
		rep.Applied += len(objs)
		o.say("validate: %s: %d objects applied (%s)", ov, len(objs), time.Since(start).Round(100*time.Millisecond))
		if err := o.exercise(ctx, objs); err != nil {
			rep.NotReady = append(rep.NotReady, ov+": "+err.Error())
		}
		o.say("validate: %s: readiness and pod replacement checked (%s)", ov, time.Since(start).Round(100*time.Millisecond))
		if err := o.remove(ctx, objs); err != nil {
			return nil, err
		}
		o.say("validate: %s: %d objects accepted, workloads Ready and pods replaced (%s)", ov, len(objs), time.Since(start).Round(100*time.Millisecond))
	}
	components := o.Platform
	if components == nil {
		components = PlatformComponents
	}
	created := map[string]bool{}
	for _, c := range components {
		if err := o.dryRunPlatform(ctx, c, rep, created); err != nil {
			return nil, err
		}
	}
	var names []string
	for n := range created {
		names = append(names, n)
	}
	if err := o.Client.RemoveNamespaces(ctx, names, o.Within); err != nil {
		return nil, err
	}
	return rep, nil
}

// dryRunPlatform server-side applies a platform component as a dry run.
// Its namespaces, and those it deploys into that the overlays create
// (dark-tower), are created for real and recorded in created for removal.
// Kinds the cluster does not serve are counted in Unchecked, not refused.
func (o *Options) dryRunPlatform(ctx context.Context, component string, rep *Report, created map[string]bool) error {
	objs, err := Render(filepath.Join(o.Infra, component))
	if err != nil {
		return err
	}
	namespaces, rest := splitNamespaces(objs)
	for _, ns := range namespaces {
		created[ns.GetName()] = true
	}
	// The namespaces it deploys into but does not create (dark-tower).
	for _, obj := range rest {
		if ns := obj.GetNamespace(); ns != "" && !created[ns] {
			created[ns] = true
			host := &unstructured.Unstructured{}
			host.SetAPIVersion("v1")
			host.SetKind("Namespace")
			host.SetName(ns)
			namespaces = append(namespaces, host)
		}
	}
	findings := refusals(component, o.Client.Apply(ctx, namespaces, false))
	accepted, unchecked := 0, 0
	for _, r := range o.Client.Apply(ctx, rest, true) {
		var notServed *cluster.NotServedError
		if errors.As(r.Err, &notServed) {
			if rep.Unchecked == nil {
				rep.Unchecked = map[string]int{}
			}
			rep.Unchecked[notServed.GVK]++
			unchecked++
			continue
		}
		if r.Err == nil {
			accepted++
		}
		findings = append(findings, refusals(component, []cluster.Result{r})...)
	}
	rep.Findings = append(rep.Findings, findings...)
	rep.Applied += accepted + len(namespaces)
	o.say("validate: %s: %d objects accepted (dry run), %d of kinds the cluster does not serve", component, accepted+len(namespaces), unchecked)
	return nil
}

// splitNamespaces separates Namespaces from the rest: they are applied
// for real first, since a dry-run object cannot land in a namespace that a
// dry run only pretended to create.
func splitNamespaces(objs []*unstructured.Unstructured) (namespaces, rest []*unstructured.Unstructured) {
	for _, obj := range objs {
		if obj.GetKind() == "Namespace" {
			namespaces = append(namespaces, obj)
		} else {
			rest = append(rest, obj)
		}
	}
	return namespaces, rest
}

// refusals turns apply results into findings: errors, and Pod Security
// warnings (a Deployment is admitted with a warning; its pods would be
// refused).
func refusals(overlay string, results []cluster.Result) []Finding {
	var out []Finding
	for _, r := range results {
		if r.Err != nil {
			out = append(out, Finding{overlay, r.Object, r.Err.Error()})
		}
		for _, w := range r.Warnings {
			if strings.Contains(w, "would violate PodSecurity") {
				out = append(out, Finding{overlay, r.Object, w})
			}
		}
	}
	return out
}

// installPlatform installs the CRDs and the platform's admission policies
// (infra/platform/security), and waits until the policies are enforced.
func (o *Options) installPlatform(ctx context.Context) error {
	crds, err := cluster.ParseObjects(o.CRDs)
	if err != nil {
		return err
	}
	policies, err := Render(filepath.Join(o.Infra, "platform", "security"))
	if err != nil {
		return err
	}
	for _, r := range o.Client.Apply(ctx, append(crds, policies...), false) {
		if r.Err != nil {
			return fmt.Errorf("installing the platform: %s: %w", r.Object, r.Err)
		}
	}
	o.say("validate: installed %d CRDs and %d admission objects", len(crds), len(policies))
	return o.waitPoliciesEnforced(ctx)
}

// waitPoliciesEnforced probes with a dry-run Pod, compliant with Pod
// Security but using an image tag, in a namespace the digest policy
// covers, until the server refuses it for the tag.
func (o *Options) waitPoliciesEnforced(ctx context.Context) error {
	probe, err := cluster.ParseObjects([][]byte{[]byte(`apiVersion: v1
kind: Namespace
metadata:
  name: darktower-validate-probe
  labels:
    darktower.io/images: pinned-by-digest
    app.kubernetes.io/part-of: dark-tower
    pod-security.kubernetes.io/enforce: restricted
`), []byte(`apiVersion: v1
kind: Pod
metadata:
  name: probe
  namespace: darktower-validate-probe
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: probe
      image: example.com/probe:tag
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
`)})
	if err != nil {
		return err
	}
	o.Client.Apply(ctx, probe[:1], false) // kept: later runs reuse it
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := o.Client.Apply(ctx, probe[1:], true)
		if res[0].Err != nil && strings.Contains(res[0].Err.Error(), "pinned by digest") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the admission policies were not enforced within 30 s (last answer: %v)", res[0].Err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

var noGrace int64

func workloads(objs []*unstructured.Unstructured) []cluster.Workload {
	var ws []cluster.Workload
	for _, o := range objs {
		if k := o.GetKind(); k == "Deployment" || k == "StatefulSet" {
			ws = append(ws, cluster.Workload{Kind: k, Namespace: o.GetNamespace(), Name: o.GetName()})
		}
	}
	return ws
}

// exercise waits for every workload to be Ready, then deletes one pod of
// each and waits for the replacement (what chaos checks rely on).
func (o *Options) exercise(ctx context.Context, objs []*unstructured.Unstructured) error {
	ws := workloads(objs)
	if err := o.Client.WaitReady(ctx, ws, o.Within); err != nil {
		return err
	}
	for _, w := range ws {
		sel, err := o.Client.Selector(ctx, w)
		if err != nil {
			return err
		}
		// Grace 0: the simulated kubelet would otherwise wait out the
		// pods' 30 s termination grace before the StatefulSet may replace one.
		if _, err := o.Client.DeleteOnePod(ctx, w.Namespace, sel, &noGrace); err != nil {
			return fmt.Errorf("%s: %w", w, err)
		}
	}
	// A deleted pod is replaced: the workloads are whole again.
	time.Sleep(500 * time.Millisecond)
	return o.Client.WaitReady(ctx, ws, o.Within)
}

// remove deletes the overlay's namespaces and waits until they are gone,
// so the next overlay (staging and prod share names) starts clean.
func (o *Options) remove(ctx context.Context, objs []*unstructured.Unstructured) error {
	namespaces, _ := splitNamespaces(objs)
	var names []string
	for _, ns := range namespaces {
		names = append(names, ns.GetName())
	}
	return o.Client.RemoveNamespaces(ctx, names, o.Within)
}

// Package canary runs the services' canary releases on a real cluster:
// Install puts Flagger (v1.36.1), a Gateway API implementation (Traefik
// v3) and the repository's Canaries and MetricTemplates into a preview
// cluster; Watch follows one Canary to its end; Run releases a change
// and times it (the canary proof, `canary check`).
//
// Flagger and Traefik are built from the Go module proxy by the tool
// modules under tools/canary (their versions pinned there), through the
// pipeline like the services (build-all over images/platform: image,
// SBOMs, the vulnerability gate, signature and attestations), and loaded
// into the nodes like the services; their CRDs and Flagger's RBAC are
// read from those same module versions, so what runs and what defines
// its API cannot drift apart.
package canary

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/flow"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/preview"
	"github.com/darktower/delivery/pipelines/upstream"
	"github.com/darktower/delivery/pipelines/validate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

//go:embed manifests/system.yaml
var systemManifest string

const (
	// FlaggerNamespace and GatewayNamespace are where Install runs Flagger
	// and Traefik.
	FlaggerNamespace = "flagger-system"
	GatewayNamespace = "darktower-gateway"
	// Overlay holds the Canaries as a preview binds them (under infra/).
	Overlay = "overlays/preview/canary"
	// Prometheus is the preview's Prometheus (pipelines/deploy).
	Prometheus = "http://prometheus.monitoring:9090"
	// CAConfigMap is the internal CA the Gateway verifies pods against.
	CAConfigMap = "darktower-internal-ca"
)

// The tool modules that pin Flagger and Traefik, and what is built from
// and read out of each.
var (
	// Name is the image's spec in images/platform (its main package is there).
	flaggerTool = tool{Dir: "tools/canary/flagger", Module: "github.com/fluxcd/flagger", Name: "flagger"}
	traefikTool = tool{Dir: "tools/canary/traefik", Module: "github.com/traefik/traefik/v3", Name: "traefik"}
	gatewayAPI  = tool{Dir: "tools/canary/traefik", Module: "sigs.k8s.io/gateway-api"}
)

type tool struct{ Dir, Module, Name string }

// InstallOptions say which cluster gets the canaries.
type InstallOptions struct {
	Root      string // repository root
	Cluster   *kindcluster.Cluster
	Client    *cluster.Client
	Namespace string        // the services' (default preview)
	Wait      time.Duration // for Flagger, Traefik and the Canaries' initialization (default 5 min)
	// LoadWorkers is how many API rounds the canary load makes at once,
	// each every LoadInterval (default 300, every 2 s: 150 rounds a second).
	LoadWorkers int
	// Images are build-all's options for Flagger's and Traefik's images
	// (flow.PlatformImages), built for the nodes' platform. The zero value
	// is build-all's defaults (its vulnerability source, base and signing
	// key), with the machine's SBOM and stage caches (an unchanged image is
	// not cataloged, scanned or signed again) and a temporary output
	// directory removed once the images are loaded (Images.Out keeps it).
	// Give the services' build's vulnerability DB (VulnDB) so that both
	// are judged alike.
	Images   flow.BuildAllOptions
	Progress io.Writer
}

// The canaries' load (infra/overlays/preview/canary/load.yaml): one pod,
// since each Canary's webhooks reach one pod through the Service.
const (
	LoadDeployment = "darktower-canary-load"
	LoadComponent  = "canary-load"
	LoadInterval   = 2 * time.Second
	// LoadKeySetRate is how many times a second the load fetches
	// ac-service's key set while started: 20, so each of its 2 pods serves
	// about 200 in the analysis's 20 s window (request-volume wants 20).
	LoadKeySetRate = 20
	// LoadMediaSessions media sessions at once, each replaced by a new one
	// (placed anew by meeting-controller) after LoadMediaLifetime, each
	// relaying a datagram each way every LoadMediaInterval: within a
	// lifetime of a media-handler canary registering, it carries its
	// pods' share of them (1 of 3 pods: about 10 sessions, 40 datagrams a
	// second). Its first check, 10 s after it is ready, sees a few
	// seconds of them, which at one datagram a second per session read
	// as 20-ish against media-volume's 20 (a run: 21.31).
	LoadMediaSessions = 30
	LoadMediaLifetime = 6 * time.Second
	LoadMediaInterval = 500 * time.Millisecond
)

// Installed is what Install put in.
type Installed struct {
	FlaggerImage, TraefikImage string
	FlaggerVersion             string
	TraefikVersion             string
	GatewayAPIVersion          string
	Canaries                   []string // Flagger's: it initializes and runs them
	// Suspended are the Canaries Flagger leaves alone (spec.suspend):
	// their analysis is the pipeline's (media-handler's, `canary roll`).
	Suspended []string
	// Images is the platform images' build (images/platform): each
	// image's digests, SBOMs, scan counts and signature, and the gate.
	Images *build.Manifest
	// StopLoad deletes the canaries' load, logging its last lines (the
	// install leaves it running for the Canaries' webhooks).
	StopLoad func()
}

// Install builds and loads Flagger and Traefik, applies the CRDs, RBAC,
// controllers and the overlay's Canaries, and waits until every Canary is
// Initialized (Flagger has made its primary and routes all traffic to it).
func Install(ctx context.Context, o InstallOptions) (*Installed, error) {
	if o.Namespace == "" {
		o.Namespace = "preview"
	}
	if o.Wait == 0 {
		o.Wait = 5 * time.Minute
	}
	say := func(format string, a ...any) { upstream.Say(o.Progress, "canary: "+format, a...) }
	in := &Installed{}
	var err error
	start := time.Now()
	var flaggerDir string
	for _, t := range []struct {
		tool
		version, dir *string
	}{{flaggerTool, &in.FlaggerVersion, &flaggerDir}, {traefikTool, &in.TraefikVersion, new(string)}} {
		if *t.version, *t.dir, err = moduleDir(ctx, o.Root, t.tool); err != nil {
			return nil, err
		}
	}
	// Their images, through the pipeline like the services' (build, SBOMs,
	// the vulnerability gate, signature), loaded like the services'.
	if in.Images, err = loadPlatformImages(ctx, o, in, say); err != nil {
		return nil, err
	}
	objs, err := upstreamObjects(ctx, o.Root, flaggerDir, in)
	if err != nil {
		return nil, err
	}
	sys, err := renderSystem(in)
	if err != nil {
		return nil, err
	}
	objs = append(objs, sys...)
	overlay, err := validate.Render(filepath.Join(o.Root, "infra", Overlay))
	if err != nil {
		return nil, err
	}
	for _, obj := range overlay {
		if obj.GetNamespace() != "" && obj.GetNamespace() != o.Namespace {
			return nil, fmt.Errorf("infra/%s renders %s into namespace %s; the services run in %s", Overlay, cluster.ID(obj), obj.GetNamespace(), o.Namespace)
		}
		if obj.GetKind() == "Canary" {
			if suspended, _, _ := unstructured.NestedBool(obj.Object, "spec", "suspend"); suspended {
				in.Suspended = append(in.Suspended, obj.GetName())
			} else {
				in.Canaries = append(in.Canaries, obj.GetName())
			}
		}
	}
	sort.Strings(in.Canaries)
	sort.Strings(in.Suspended)
	ca, err := internalCA(ctx, o.Client, o.Namespace)
	if err != nil {
		return nil, err
	}
	objs = append(objs, ca)
	objs = append(objs, overlay...)
	if err := applyAll(ctx, o.Client, objs); err != nil {
		return nil, err
	}
	say("applied %d objects: Gateway API %s and Flagger CRDs, Flagger, Traefik, the Gateways and the Canaries %s (suspended, run by canary roll: %s)",
		len(objs), in.GatewayAPIVersion, strings.Join(in.Canaries, ", "), strings.Join(in.Suspended, ", "))
	for _, w := range []struct{ ns, name string }{{FlaggerNamespace, "flagger"}, {GatewayNamespace, "traefik"}} {
		if err := kindcluster.WaitPodsReady(ctx, o.Client.Typed, w.ns, "app.kubernetes.io/name="+w.name, o.Wait); err != nil {
			return nil, fmt.Errorf("%s in %s: %w", w.name, w.ns, err)
		}
	}
	for _, name := range in.Canaries {
		if _, err := WaitPhase(ctx, o.Client, o.Namespace, name, o.Wait, PhaseInitialized, PhaseSucceeded); err != nil {
			return nil, err
		}
	}
	// The load the analysis judges, through the Gateways, idle until a
	// Canary's pre-rollout webhook starts it. At 150 rounds a second the
	// 5% step still sees 7.5 calls a second of each service; one pod
	// renewing its tokens every 2 s stays well inside ac-service's
	// per-client token rate.
	workers := o.LoadWorkers
	if workers == 0 {
		workers = 300
	}
	if in.StopLoad, err = preview.StartLoadWith(ctx, o.Cluster, o.Client, o.Root, o.Namespace, preview.LoadOptions{Name: LoadDeployment, Component: LoadComponent,
		Replicas: 1, Interval: LoadInterval, CPULimit: "1500m", Env: []corev1.EnvVar{
			{Name: "SMOKE_GATEWAY", Value: "traefik." + GatewayNamespace + ".svc:443"},
			{Name: "SMOKE_LOAD_WORKERS", Value: strconv.Itoa(workers)},
			{Name: "SMOKE_LOAD_ON_DEMAND", Value: "true"},
			// media-handler's rollout traffic (canary roll): sessions
			// placed anew every lifetime, a datagram lost after 1 s.
			{Name: "SMOKE_LOAD_MEDIA_SESSIONS", Value: strconv.Itoa(LoadMediaSessions)},
			{Name: "SMOKE_LOAD_MEDIA_LIFETIME", Value: LoadMediaLifetime.String()},
			{Name: "SMOKE_LOAD_MEDIA_INTERVAL", Value: LoadMediaInterval.String()},
			{Name: "SMOKE_UDP_TIMEOUT", Value: "1s"},
			// ac-service's rollout traffic (canary roll): its key set, each
			// fetch a new connection, so half reach a pod of two.
			{Name: "SMOKE_LOAD_KEYSET_RATE", Value: strconv.Itoa(LoadKeySetRate)}}}, o.Progress); err != nil {
		return nil, fmt.Errorf("the canaries' load: %w", err)
	}
	say("Flagger, Traefik, %d Canaries and their load (%d workers every %s, ac-service's key set %d times a second and %d media sessions renewed every %s, started by each Canary's pre-rollout webhook) ready in %s",
		len(in.Canaries), workers, LoadInterval, LoadKeySetRate, LoadMediaSessions, LoadMediaLifetime, time.Since(start).Round(time.Second))
	return in, nil
}

// moduleDir is where the go command keeps module m at the version the
// tool module t pins (downloading it from the proxy if need be).
func moduleDir(ctx context.Context, root string, t tool) (version, dir string, err error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", t.Module)
	cmd.Dir = filepath.Join(root, t.Dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("go mod download %s (in %s): %v\n%s", t.Module, t.Dir, err, stderr.Bytes())
	}
	var m struct{ Version, Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", "", err
	}
	if m.Error != "" || m.Dir == "" {
		return "", "", fmt.Errorf("go mod download %s (in %s): %s", t.Module, t.Dir, m.Error)
	}
	return m.Version, m.Dir, nil
}

// upstreamObjects are the CRDs (Gateway API's standard channel, Flagger's)
// and Flagger's RBAC, from the module versions the tools pin.
func upstreamObjects(ctx context.Context, root, flaggerDir string, in *Installed) ([]*unstructured.Unstructured, error) {
	gwVersion, gwDir, err := moduleDir(ctx, root, gatewayAPI)
	if err != nil {
		return nil, err
	}
	in.GatewayAPIVersion = gwVersion
	files, err := filepath.Glob(filepath.Join(gwDir, "config", "crd", "standard", "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("sigs.k8s.io/gateway-api %s has no config/crd/standard/*.yaml in %s", gwVersion, gwDir)
	}
	files = append(files, filepath.Join(flaggerDir, "artifacts", "flagger", "crd.yaml"), filepath.Join(flaggerDir, "artifacts", "flagger", "account.yaml"))
	var objs []*unstructured.Unstructured
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		parsed, err := cluster.ParseObjects(cluster.SplitYAML(raw))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		objs = append(objs, parsed...)
	}
	// Flagger's account.yaml puts its ServiceAccount in "default".
	for _, obj := range objs {
		switch obj.GetKind() {
		case "ServiceAccount":
			obj.SetNamespace(FlaggerNamespace)
		case "ClusterRoleBinding":
			subjects, _, _ := unstructured.NestedSlice(obj.Object, "subjects")
			for _, s := range subjects {
				if m, ok := s.(map[string]any); ok && m["kind"] == "ServiceAccount" {
					m["namespace"] = FlaggerNamespace
				}
			}
			if err := unstructured.SetNestedSlice(obj.Object, subjects, "subjects"); err != nil {
				return nil, err
			}
		}
	}
	return objs, nil
}

func renderSystem(in *Installed) ([]*unstructured.Unstructured, error) {
	t, err := template.New("system").Option("missingkey=error").Parse(systemManifest)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, map[string]string{"FlaggerNamespace": FlaggerNamespace, "GatewayNamespace": GatewayNamespace,
		"FlaggerImage": in.FlaggerImage, "TraefikImage": in.TraefikImage, "Prometheus": Prometheus}); err != nil {
		return nil, err
	}
	return cluster.ParseObjects(cluster.SplitYAML(b.Bytes()))
}

// internalCA is the CA the services' certificates chain to, as the
// ConfigMap BackendTLSPolicy names (it takes CA certificates from
// ConfigMaps only), read from global-controller's TLS secret.
func internalCA(ctx context.Context, client *cluster.Client, namespace string) (*unstructured.Unstructured, error) {
	s, err := client.Typed.CoreV1().Secrets(namespace).Get(ctx, "global-controller-tls", metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the internal CA is read from secret %s/global-controller-tls (deployed by `preview up`): %w", namespace, err)
	}
	if len(s.Data["ca.crt"]) == 0 {
		return nil, fmt.Errorf("secret %s/global-controller-tls has no ca.crt", namespace)
	}
	cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: CAConfigMap, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "dark-tower", "app.kubernetes.io/managed-by": "darktower-canary"}},
		Data: map[string]string{"ca.crt": string(s.Data["ca.crt"])}}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cm)
	return &unstructured.Unstructured{Object: m}, err
}

func applyAll(ctx context.Context, client *cluster.Client, objs []*unstructured.Unstructured) error {
	var failed []string
	for _, r := range client.Apply(ctx, objs, false) {
		if r.Err != nil {
			failed = append(failed, r.Object+": "+r.Err.Error())
		}
	}
	if len(failed) > 0 {
		return errors.New("applying the canary objects: " + strings.Join(failed, "; "))
	}
	return nil
}

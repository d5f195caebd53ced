// Package deploy puts a build onto a real cluster: the images of a
// build-all (dist/) loaded straight into the nodes, the data stores the
// preview and local overlays need (PostgreSQL and Redis from Debian's
// packages, with the labels and names the real ones have), Prometheus
// (Debian's package too) scraping what the overlay's ServiceMonitors
// select, the secrets the overlay's ExternalSecrets would sync (from
// dev-secrets, through the local store's semantics), then the overlay
// itself, pinned to the build's digests, applied and waited for.
package deploy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"text/template"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/devsecrets"
	"github.com/darktower/delivery/pipelines/internal/certs"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/nodeimage"
	"github.com/darktower/delivery/pipelines/upstream"
	"github.com/darktower/delivery/pipelines/validate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigyaml "sigs.k8s.io/yaml"
)

//go:embed manifests/data.yaml
var dataManifest string

//go:embed manifests/prometheus.yaml
var prometheusManifest string

// DataNamespace is where PostgreSQL and Redis run (infra/platform/database).
// Prometheus runs in MonitoringNamespace.
const DataNamespace = "dark-tower-data"

// Options say what to deploy where.
type Options struct {
	Cluster   *kindcluster.Cluster
	Client    *cluster.Client
	Root      string // repository root (infra/ is read from here)
	Dist      string // a build-all output directory (manifest.json, oci/)
	Overlay   string // under infra/, e.g. overlays/preview
	CacheDir  string // Debian roots (default upstream.DefaultCacheDir())
	Mirror    string
	Wait      time.Duration // for every workload to be Ready (default 5 min)
	Progress  io.Writer
	Localized string // the image repository prefix inside the cluster (default darktower.local)
}

// Result is what was deployed.
type Result struct {
	Namespace string
	Workloads []cluster.Workload
	Images    map[string]string // service → image reference applied
	Steps     []nodeimage.Step
}

func (r *Result) timed(name string, start time.Time, progress io.Writer) {
	d := time.Since(start)
	r.Steps = append(r.Steps, nodeimage.Step{Name: name, Duration: d})
	upstream.Say(progress, "deploy: %s (%s)", name, d.Round(100*time.Millisecond))
}

// Up deploys the build in o.Dist with the overlay o.Overlay.
func Up(ctx context.Context, o Options) (*Result, error) {
	if o.Wait == 0 {
		o.Wait = 5 * time.Minute
	}
	if o.Localized == "" {
		o.Localized = "darktower.local"
	}
	r := &Result{Images: map[string]string{}}
	start := time.Now()
	objs, err := validate.Render(filepath.Join(o.Root, "infra", o.Overlay))
	if err != nil {
		return nil, err
	}
	dataObjs, err := validate.Render(filepath.Join(o.Root, "infra", "platform", "database"))
	if err != nil {
		return nil, err
	}
	for _, obj := range objs {
		if obj.GetKind() == "Namespace" {
			r.Namespace = obj.GetName()
		}
	}
	if r.Namespace == "" {
		return nil, fmt.Errorf("%s renders no Namespace: which namespace do the services run in?", o.Overlay)
	}
	m, err := build.ReadManifest(filepath.Join(o.Dist, build.ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("%w (run build-all first; it writes %s last)", err, filepath.Join(o.Dist, build.ManifestFile))
	}
	r.timed("overlay "+o.Overlay+" rendered", start, o.Progress)

	// The build's images, host platform, straight into the nodes.
	start = time.Now()
	if r.Images, err = LoadImages(o.Cluster, o.Dist, m, NodePlatform(), o.Localized); err != nil {
		return nil, err
	}
	r.timed(fmt.Sprintf("%d images of build %s loaded into the nodes", len(m.Images), m.Version), start, o.Progress)

	// Data stores and Prometheus: one image.
	start = time.Now()
	data, err := nodeimage.BuildDataServices(ctx, o.CacheDir, o.Mirror, o.Progress)
	if err != nil {
		return nil, err
	}
	if o.Cluster.HasImage(data.Ref) {
		r.timed("data image: PostgreSQL, Redis, Prometheus ("+data.Ref+") already in the nodes (preloaded by the node image)", start, o.Progress)
	} else {
		if err := o.Cluster.LoadArchive(kindcluster.Streamed(data.Archive)); err != nil {
			return nil, fmt.Errorf("loading the data image: %w", err)
		}
		r.timed("data image: PostgreSQL, Redis, Prometheus ("+data.Ref+") loaded", start, o.Progress)
	}

	// Prometheus, configured from the overlay's ServiceMonitors (no
	// prometheus-operator here to read them).
	start = time.Now()
	promCfg, err := ScrapeConfigFromServiceMonitors(objs, r.Namespace)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Overlay, err)
	}
	promObjs, err := renderPrometheus(data, promCfg, objs)
	if err != nil {
		return nil, err
	}
	jobs := make([]string, 0, len(promCfg.ScrapeConfigs))
	for _, sc := range promCfg.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
	}
	r.timed(fmt.Sprintf("Prometheus configured from %d ServiceMonitors (jobs %s)", len(jobs), strings.Join(jobs, ", ")), start, o.Progress)

	// Secrets: what the ExternalSecrets would sync, and PostgreSQL's server
	// certificate (cert-manager's job in the cloud) from the same CA.
	start = time.Now()
	// Made once per cluster: a second deploy (a new commit of the same pull
	// request) keeps them, since PostgreSQL and Redis took their passwords
	// when they first started.
	var secrets []*corev1.Secret
	if _, err := o.Client.Typed.CoreV1().Secrets(DataNamespace).Get(ctx, "dark-tower-pg-server-tls", metav1.GetOptions{}); err == nil {
		upstream.Say(o.Progress, "deploy: the cluster's secrets exist already: kept")
	} else {
		local, err := devsecrets.Generate(devsecrets.Options{Namespace: "dark-tower-local-secrets",
			ServiceNamespaces: []string{r.Namespace}, DataNamespace: DataNamespace})
		if err != nil {
			return nil, err
		}
		if secrets, err = RealizeExternalSecrets(append(append([]*unstructured.Unstructured{}, objs...), dataObjs...), local); err != nil {
			return nil, err
		}
		pgTLS, err := postgresServerCert(local)
		if err != nil {
			return nil, err
		}
		secrets = append(secrets, pgTLS)
	}

	var apply []*unstructured.Unstructured
	for _, obj := range dataObjs {
		// The data namespace's own objects, less what only operators serve
		// (CloudNativePG, Redis Cluster, cert-manager, external-secrets).
		switch obj.GetKind() {
		case "Namespace", "NetworkPolicy":
			apply = append(apply, obj)
		}
	}
	dataObjsLocal, err := renderData(data)
	if err != nil {
		return nil, err
	}
	apply = append(apply, dataObjsLocal...)
	apply = append(apply, promObjs...)
	for _, s := range secrets {
		u, err := toUnstructured(s)
		if err != nil {
			return nil, err
		}
		apply = append(apply, u)
	}
	for _, obj := range objs {
		switch obj.GetKind() {
		case "ExternalSecret", "ServiceMonitor":
			continue // realized above: as Secrets, as Prometheus's scrape jobs
		case "PodMonitor", "PrometheusRule":
			continue // served by prometheus-operator, which a preview does not run
		}
		if err := pinImages(obj, r.Images); err != nil {
			return nil, err
		}
		apply = append(apply, obj)
	}
	var problems []string
	for _, res := range o.Client.Apply(ctx, apply, false) {
		if res.Err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", res.Object, res.Err))
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("applying %s: %s", o.Overlay, strings.Join(problems, "; "))
	}
	r.timed(fmt.Sprintf("%d objects applied (%d secrets)", len(apply), len(secrets)), start, o.Progress)

	start = time.Now()
	r.Workloads = append(append(workloads(dataObjsLocal), workloads(promObjs)...), workloads(objs)...)
	if err := o.Client.WaitReady(ctx, r.Workloads, o.Wait); err != nil {
		return r, err
	}
	r.timed(fmt.Sprintf("%d workloads Ready", len(r.Workloads)), start, o.Progress)
	return r, nil
}

// NodePlatform is the platform of the kind nodes (the host's).
func NodePlatform() string { return "linux/" + runtime.GOARCH }

// LoadImages loads the platform images of the build in dist (m is its
// manifest.json) straight into every node of c, each as
// <localized>/<repository:tag> and, since pods are pinned by digest,
// tagged <localized>/<service>@<digest> too; it returns that pinned
// reference per service.
func LoadImages(c *kindcluster.Cluster, dist string, m *build.Manifest, platform, localized string) (map[string]string, error) {
	if localized == "" {
		localized = "darktower.local"
	}
	images := map[string]string{}
	for _, img := range m.Images {
		var digest string
		for _, p := range img.Platforms {
			if p.Platform.String() == platform {
				digest = p.Digest
			}
		}
		if digest == "" {
			return nil, fmt.Errorf("the build in %s has no %s image of %s (build-all --platforms %s)", dist, platform, img.Service, platform)
		}
		ref := localized + "/" + img.Tag // the tag is repository:tag
		err := c.LoadArchive(kindcluster.Streamed(func(w io.Writer) error {
			return build.ExportTar(build.ExportOptions{Out: dist, Service: img.Service, Platform: platform, RefName: ref}, w)
		}))
		if err != nil {
			return nil, fmt.Errorf("loading %s: %w", img.Service, err)
		}
		pinned := fmt.Sprintf("%s/%s@%s", localized, img.Service, digest)
		// The pods are pinned by digest: containerd finds a loaded image
		// under that name only once it is tagged so.
		if err := c.Tag(ref, pinned); err != nil {
			return nil, err
		}
		images[img.Service] = pinned
	}
	return images, nil
}

// pinImages points each container at the build's image of its service,
// by digest.
func pinImages(obj *unstructured.Unstructured, images map[string]string) error {
	path := []string{"spec", "template", "spec", "containers"}
	containers, found, err := unstructured.NestedSlice(obj.Object, path...)
	if err != nil || !found {
		return err
	}
	for i, c := range containers {
		cm, ok := c.(map[string]any)
		if !ok {
			continue
		}
		name, _ := cm["name"].(string)
		if ref, ok := images[name]; ok {
			cm["image"] = ref
			cm["imagePullPolicy"] = "IfNotPresent"
			containers[i] = cm
		}
	}
	return unstructured.SetNestedSlice(obj.Object, containers, path...)
}

func workloads(objs []*unstructured.Unstructured) []cluster.Workload {
	var out []cluster.Workload
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment", "StatefulSet":
			out = append(out, cluster.Workload{Kind: o.GetKind(), Namespace: o.GetNamespace(), Name: o.GetName()})
		}
	}
	return out
}

func renderData(d *nodeimage.DataServices) ([]*unstructured.Unstructured, error) {
	return renderTemplate("data", dataManifest, map[string]any{"DataNamespace": DataNamespace, "Image": d.Ref,
		"PostgresUID": d.PostgresUID, "PostgresGID": d.PostgresGID, "RedisUID": d.RedisUID, "RedisGID": d.RedisGID})
}

// renderTemplate executes one of the embedded manifests into objects.
func renderTemplate(name, manifest string, values map[string]any) ([]*unstructured.Unstructured, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(manifest)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, values); err != nil {
		return nil, err
	}
	return cluster.ParseObjects(cluster.SplitYAML(b.Bytes()))
}

// renderPrometheus makes Prometheus's objects: its namespace unless the
// overlay renders it, the manifest's RBAC, Deployment and Service, and the
// configuration's ConfigMap.
func renderPrometheus(d *nodeimage.DataServices, cfg *PromConfig, overlay []*unstructured.Unstructured) ([]*unstructured.Unstructured, error) {
	conf, err := cfg.YAML()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(conf)
	objs, err := renderTemplate("prometheus", prometheusManifest, map[string]any{"Namespace": MonitoringNamespace, "Image": d.Ref,
		"UID": d.PrometheusUID, "GID": d.PrometheusGID, "ConfigHash": hex.EncodeToString(sum[:])})
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{Data: map[string]string{"prometheus.yml": string(conf)}}
	cm.APIVersion, cm.Kind = "v1", "ConfigMap"
	cm.Name, cm.Namespace = "prometheus-config", MonitoringNamespace
	cm.Labels = map[string]string{"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/part-of": "dark-tower", "app.kubernetes.io/managed-by": "darktower-deploy"}
	u, err := toUnstructured(cm)
	if err != nil {
		return nil, err
	}
	objs = append(objs, u)
	for _, o := range overlay {
		if o.GetKind() == "Namespace" && o.GetName() == MonitoringNamespace {
			return objs, nil
		}
	}
	// Pod Security restricted: the pod above complies, nothing else runs here.
	ns := &corev1.Namespace{}
	ns.APIVersion, ns.Kind, ns.Name = "v1", "Namespace", MonitoringNamespace
	ns.Labels = map[string]string{"app.kubernetes.io/part-of": "dark-tower", "app.kubernetes.io/managed-by": "darktower-deploy",
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}
	u, err = toUnstructured(ns)
	if err != nil {
		return nil, err
	}
	return append([]*unstructured.Unstructured{u}, objs...), nil
}

// postgresServerCert issues PostgreSQL's server certificate for the names
// the services' database URLs use, from the local internal CA.
func postgresServerCert(local []devsecrets.Secret) (*corev1.Secret, error) {
	var caCert, caKey string
	for _, s := range local {
		if s.Metadata.Name == "dark-tower-internal-ca" {
			caCert, caKey = s.StringData["certificate"], s.StringData["private-key"]
		}
	}
	ca, err := parsePair(caCert, caKey)
	if err != nil {
		return nil, fmt.Errorf("the local internal CA: %w", err)
	}
	host := "dark-tower-pg-pooler-rw"
	names := []string{host, host + "." + DataNamespace, host + "." + DataNamespace + ".svc", host + "." + DataNamespace + ".svc.cluster.local"}
	leaf, err := certs.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: host}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(0, 1, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, nil)
	if err != nil {
		return nil, err
	}
	s := &corev1.Secret{Type: corev1.SecretTypeTLS, StringData: map[string]string{
		"tls.crt": string(leaf.CertPEM), "tls.key": string(leaf.KeyPEM), "ca.crt": caCert}}
	s.APIVersion, s.Kind = "v1", "Secret"
	s.Name, s.Namespace = "dark-tower-pg-server-tls", DataNamespace
	s.Labels = map[string]string{"app.kubernetes.io/part-of": "dark-tower", "app.kubernetes.io/managed-by": "darktower-deploy"}
	return s, nil
}

func parsePair(certPEM, keyPEM string) (*certs.Pair, error) {
	cb, _ := pem.Decode([]byte(certPEM))
	kb, _ := pem.Decode([]byte(keyPEM))
	if cb == nil || kb == nil {
		return nil, errors.New("not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("the CA key is not ECDSA")
	}
	return &certs.Pair{Cert: cert, Key: ec, CertPEM: []byte(certPEM), KeyPEM: []byte(keyPEM)}, nil
}

func toUnstructured(s any) (*unstructured.Unstructured, error) {
	raw, err := sigyaml.Marshal(s)
	if err != nil {
		return nil, err
	}
	objs, err := cluster.ParseObjects([][]byte{raw})
	if err != nil {
		return nil, err
	}
	return objs[0], nil
}

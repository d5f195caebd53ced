package policy

import (
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Which overlays' services subscribe to the flag gateway
// (infra/overlays/feature-flags; docs/operations/feature-flags.md,
// Deployment): staging and prod. Previews and the local environment have
// no flag system, and their services run on the compiled defaults.
var (
	FlagSubscriberOverlays   = []string{"overlays/staging", "overlays/prod"}
	NoFlagSubscriberOverlays = []string{"overlays/local/region-us-west", "overlays/local/region-us-east", "overlays/preview"}
	// FlagsWatchURL is the gateway's Service in its namespace, on its API
	// port end to end.
	FlagsWatchURL = fmt.Sprintf("wss://%s.%s.svc:%d/v1/flags/watch", FlagGateway, FlagsNamespace, FlagGatewayAPIPort)
	// The variables that make a service subscribe, or hold GC's client
	// credentials for it: none may be set where there is no flag system.
	flagSubscriptionVars = []string{"FLAGS_URL", "FLAGS_CACHE_FILE", "GC_AC_TOKEN_URL", "GC_CLIENT_ID", "GC_CLIENT_SECRET"}
)

// GC's client secret, synced like MC's and MH's: key client-secret of the
// service's secret, from property client-secret of its remote key.
const (
	gcClientSecret    = "global-controller-secrets"
	gcClientSecretKey = "client-secret"
	gcRemoteKey       = "dark-tower-global-controller"
)

func envVar(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// mountedVolume is the volume holding file in the container, and whether
// the mount is writable.
func mountedVolume(spec corev1.PodSpec, c corev1.Container, file string) (*corev1.Volume, bool) {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") && (best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	if best == nil {
		return nil, false
	}
	for i, v := range spec.Volumes {
		if v.Name == best.Name {
			return &spec.Volumes[i], !best.ReadOnly
		}
	}
	return nil, false
}

// externalSecretSources maps "target/secretKey" to "remoteKey/property"
// for every ExternalSecret of the rendering.
func externalSecretSources(r *Rendered) (map[string]string, error) {
	out := map[string]string{}
	for _, o := range r.Structural {
		if o.Kind != "ExternalSecret" {
			continue
		}
		var es struct {
			Spec struct {
				Target struct{ Name string }
				Data   []struct {
					SecretKey string                         `json:"secretKey"`
					RemoteRef struct{ Key, Property string } `json:"remoteRef"`
				}
			}
		}
		if err := yaml.Unmarshal(o.YAML, &es); err != nil {
			return nil, fmt.Errorf("%s: %w", o.ID(), err)
		}
		for _, d := range es.Spec.Data {
			out[es.Spec.Target.Name+"/"+d.SecretKey] = d.RemoteRef.Key + "/" + d.RemoteRef.Property
		}
	}
	return out, nil
}

// checkFlagSubscribers holds an overlay whose services subscribe to the
// gateway: each of the four has the gateway's URL, a cache file on a
// writable emptyDir of its own, the internal CA for the gateway's
// certificate and the audience the gateway checks; GC has AC's token
// endpoint and its client credentials, the secret synced like MC's and
// MH's; every client id is one the gateway lets subscribe.
func checkFlagSubscribers(r *Rendered, subscribers []string) []string {
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	sources, err := externalSecretSources(r)
	if err != nil {
		return []string{err.Error()}
	}
	seen := map[string]bool{}
	for _, w := range r.Workloads() {
		if !slices.Contains(Services, w.Name) {
			continue
		}
		seen[w.Name] = true
		spec := w.Template.Spec
		var c corev1.Container
		for _, ct := range spec.Containers {
			if ct.Name == w.Name {
				c = ct
			}
		}
		if c.Name == "" {
			add("%s %s: no container %s", w.Kind, w.Name, w.Name)
			continue
		}
		literal := func(name string) string {
			e := envVar(c, name)
			if e == nil || e.ValueFrom != nil {
				return ""
			}
			return e.Value
		}
		if got := literal("FLAGS_URL"); got != FlagsWatchURL {
			add("%s %s: FLAGS_URL %q, want %q", w.Kind, w.Name, got, FlagsWatchURL)
		}
		if e := envVar(c, "FLAGS_AUDIENCE"); e != nil && (e.ValueFrom != nil || e.Value != "flag-gateway") {
			add("%s %s: FLAGS_AUDIENCE %q: the gateway checks flag-gateway", w.Kind, w.Name, e.Value)
		}
		cache := literal("FLAGS_CACHE_FILE")
		if cache == "" || !path.IsAbs(cache) {
			add("%s %s: FLAGS_CACHE_FILE %q: want an absolute path", w.Kind, w.Name, cache)
		} else if v, writable := mountedVolume(spec, c, cache); v == nil || v.EmptyDir == nil || !writable {
			add("%s %s: FLAGS_CACHE_FILE %s is not on a writable emptyDir (the root filesystem is read-only)", w.Kind, w.Name, cache)
		} else if v.Name != "flags-cache" {
			add("%s %s: FLAGS_CACHE_FILE %s is on volume %s, want its own emptyDir flags-cache", w.Kind, w.Name, cache, v.Name)
		}
		ca := literal("TLS_CA_FILE")
		if ca == "" || !strings.HasSuffix(ca, "/ca.crt") || mountedFrom(spec, c, ca) != w.Name+"-tls" {
			add("%s %s: TLS_CA_FILE %q: want the internal CA (ca.crt of %s-tls) to verify the gateway's certificate", w.Kind, w.Name, ca, w.Name)
		}
		clientID := w.Name // MC_CLIENT_ID and MH_CLIENT_ID default to it; AC signs as ac-service
		switch w.Name {
		case "global-controller":
			clientID = literal("GC_CLIENT_ID")
			if clientID != "global-controller" {
				add("%s %s: GC_CLIENT_ID %q, want global-controller", w.Kind, w.Name, clientID)
			}
			if u, err := url.Parse(literal("GC_AC_TOKEN_URL")); err != nil || u.Scheme != "https" || u.Hostname() != "ac-service" || u.Path != "/v1/oauth/token" {
				add("%s %s: GC_AC_TOKEN_URL %q, want AC's token endpoint https://ac-service/v1/oauth/token", w.Kind, w.Name, literal("GC_AC_TOKEN_URL"))
			}
			e := envVar(c, "GC_CLIENT_SECRET")
			if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
				e.ValueFrom.SecretKeyRef.Name != gcClientSecret || e.ValueFrom.SecretKeyRef.Key != gcClientSecretKey {
				add("%s %s: GC_CLIENT_SECRET must come from secret %s, key %s", w.Kind, w.Name, gcClientSecret, gcClientSecretKey)
			} else if got, want := sources[gcClientSecret+"/"+gcClientSecretKey], gcRemoteKey+"/client-secret"; got != want {
				add("%s %s: %s/%s is synced from %q, want %q (as MC's and MH's client secrets)", w.Kind, w.Name, gcClientSecret, gcClientSecretKey, got, want)
			}
		case "meeting-controller", "media-handler":
			prefix := map[string]string{"meeting-controller": "MC_", "media-handler": "MH_"}[w.Name]
			if id := literal(prefix + "CLIENT_ID"); id != "" {
				clientID = id
			}
			if literal(prefix+"AC_TOKEN_URL") == "" {
				add("%s %s: no %sAC_TOKEN_URL to get its token for the gateway", w.Kind, w.Name, prefix)
			}
			e := envVar(c, prefix+"CLIENT_SECRET")
			if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				add("%s %s: no %sCLIENT_SECRET from a secret", w.Kind, w.Name, prefix)
			} else if got, want := sources[e.ValueFrom.SecretKeyRef.Name+"/"+e.ValueFrom.SecretKeyRef.Key], "dark-tower-"+w.Name+"/client-secret"; got != want {
				add("%s %s: %sCLIENT_SECRET is synced from %q, want %q", w.Kind, w.Name, prefix, got, want)
			}
		}
		if !slices.Contains(subscribers, clientID) {
			add("%s %s: client id %q is not in the gateway's FLAGS_SUBSCRIBERS %v", w.Kind, w.Name, clientID, subscribers)
		}
	}
	for _, s := range Services {
		if !seen[s] {
			add("%s is not rendered", s)
		}
	}
	return out
}

func gatewaySubscribers(t *testing.T) []string {
	t.Helper()
	s := loadFlagSystem(t).env("FLAGS_SUBSCRIBERS")
	if s == "" {
		t.Fatalf("%s: the gateway's FLAGS_SUBSCRIBERS is not set", FlagsComponent)
	}
	return strings.Split(s, ",")
}

func TestStagingAndProdServicesSubscribeToTheFlagGateway(t *testing.T) {
	subscribers := gatewaySubscribers(t)
	for _, overlay := range FlagSubscriberOverlays {
		t.Run(overlay, func(t *testing.T) {
			for _, p := range checkFlagSubscribers(decoded(t, overlay), subscribers) {
				t.Error(p)
			}
		})
	}
}

// Previews and the local environment run no flag system: none of their
// services subscribes, and GC's secret does not ask the secrets backend
// for a client secret their secrets (pipelines/devsecrets) do not have.
func TestPreviewAndLocalServicesDoNotSubscribe(t *testing.T) {
	for _, overlay := range NoFlagSubscriberOverlays {
		t.Run(overlay, func(t *testing.T) {
			r := decoded(t, overlay)
			specs := podSpecs(r)
			if len(specs) < len(Services) {
				t.Fatalf("%d pod specs: the check would prove nothing", len(specs))
			}
			for _, spec := range specs {
				for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
					for _, v := range flagSubscriptionVars {
						if envVar(c, v) != nil {
							t.Errorf("container %s sets %s", c.Name, v)
						}
					}
				}
				for _, v := range spec.Volumes {
					if v.Name == "flags-cache" {
						t.Errorf("volume %s is mounted", v.Name)
					}
				}
			}
			sources, err := externalSecretSources(r)
			if err != nil {
				t.Fatal(err)
			}
			if src, ok := sources[gcClientSecret+"/"+gcClientSecretKey]; ok {
				t.Errorf("%s/%s is synced (from %s)", gcClientSecret, gcClientSecretKey, src)
			}
		})
	}
}

// The subscribers' check must fail on drift: each mutation breaks one rule.
func TestFlagSubscriberChecksCatchDrift(t *testing.T) {
	subscribers := gatewaySubscribers(t)
	if p := checkFlagSubscribers(decoded(t, "overlays/prod"), subscribers); len(p) != 0 {
		t.Fatalf("the unmutated overlay has problems: %v", p)
	}
	container := func(r *Rendered, name string) (*corev1.PodSpec, *corev1.Container) {
		var specs []*corev1.PodSpec
		for _, d := range All[*appsv1.Deployment](r) {
			if d.Name == name {
				specs = append(specs, &d.Spec.Template.Spec)
			}
		}
		for _, s := range All[*appsv1.StatefulSet](r) {
			if s.Name == name {
				specs = append(specs, &s.Spec.Template.Spec)
			}
		}
		for _, spec := range specs {
			for i := range spec.Containers {
				if spec.Containers[i].Name == name {
					return spec, &spec.Containers[i]
				}
			}
		}
		t.Fatalf("no %s container", name)
		return nil, nil
	}
	setEnv := func(c *corev1.Container, name, value string) {
		for i := range c.Env {
			if c.Env[i].Name == name {
				c.Env[i] = corev1.EnvVar{Name: name, Value: value}
			}
		}
	}
	for name, m := range map[string]struct {
		mutate func(r *Rendered)
		want   string
	}{
		"MC without FLAGS_URL": {func(r *Rendered) {
			_, c := container(r, "meeting-controller")
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "FLAGS_URL" })
		}, "meeting-controller: FLAGS_URL"},
		"MH's gateway over plain ws": {func(r *Rendered) {
			_, c := container(r, "media-handler")
			setEnv(c, "FLAGS_URL", strings.Replace(FlagsWatchURL, "wss://", "ws://", 1))
		}, "media-handler: FLAGS_URL"},
		"AC's cache on the read-only root": {func(r *Rendered) {
			_, c := container(r, "ac-service")
			setEnv(c, "FLAGS_CACHE_FILE", "/var/lib/darktower/flags.json")
		}, "ac-service: FLAGS_CACHE_FILE /var/lib/darktower/flags.json is not on a writable emptyDir"},
		"AC without the internal CA": {func(r *Rendered) {
			_, c := container(r, "ac-service")
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "TLS_CA_FILE" })
		}, "ac-service: TLS_CA_FILE"},
		"GC's secret inline": {func(r *Rendered) {
			_, c := container(r, "global-controller")
			setEnv(c, "GC_CLIENT_SECRET", "hunter2")
		}, "GC_CLIENT_SECRET must come from secret"},
		"GC under another client id": {func(r *Rendered) {
			_, c := container(r, "global-controller")
			setEnv(c, "GC_CLIENT_ID", "gc")
		}, "GC_CLIENT_ID \"gc\""},
		"GC's secret not synced": {func(r *Rendered) {
			r.Structural = slices.DeleteFunc(slices.Clone(r.Structural), func(o Object) bool {
				return o.Kind == "ExternalSecret" && o.Name == gcClientSecret
			})
		}, "is synced from \"\""},
	} {
		r, err := Decoded(infraDir + "/overlays/prod")
		if err != nil {
			t.Fatal(err)
		}
		m.mutate(r)
		found := false
		problems := checkFlagSubscribers(r, subscribers)
		for _, p := range problems {
			found = found || strings.Contains(p, m.want)
		}
		if !found {
			t.Errorf("%s: no problem containing %q in %v", name, m.want, problems)
		}
	}
}

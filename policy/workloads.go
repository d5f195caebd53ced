package policy

import (
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

// Rendered is one rendered overlay, decoded.
type Rendered struct {
	Objects    []Object
	Typed      map[string]any // by Object.ID()
	Structural []Object
}

// Decoded renders dir and decodes every object.
func Decoded(dir string) (*Rendered, error) {
	objs, err := Render(dir)
	if err != nil {
		return nil, err
	}
	typed, structural, err := DecodeAll(objs)
	if err != nil {
		return nil, err
	}
	return &Rendered{Objects: objs, Typed: typed, Structural: structural}, nil
}

// All returns every typed object of type T.
func All[T any](r *Rendered) []T {
	var out []T
	for _, o := range r.Objects {
		if v, ok := r.Typed[o.ID()].(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// Workload is a service's pod-owning object, whatever its kind.
type Workload struct {
	Kind, Namespace, Name string
	Labels                map[string]string
	Template              corev1.PodTemplateSpec
}

// Workloads finds each service's StatefulSet or Deployment.
func (r *Rendered) Workloads() []Workload {
	var ws []Workload
	for _, d := range All[*appsv1.Deployment](r) {
		ws = append(ws, Workload{"Deployment", d.Namespace, d.Name, d.Labels, d.Spec.Template})
	}
	for _, s := range All[*appsv1.StatefulSet](r) {
		ws = append(ws, Workload{"StatefulSet", s.Namespace, s.Name, s.Labels, s.Spec.Template})
	}
	return ws
}

// problems collects findings with a common prefix.
type problems struct {
	prefix string
	list   []string
}

func (p *problems) add(f string, a ...any) { p.list = append(p.list, p.prefix+fmt.Sprintf(f, a...)) }

// CheckWorkload holds one service's workload to the ADR: kind, resources,
// probes, Pod Security "restricted", labels, grace period, node pool and
// (when pinned) digest-pinned images.
func CheckWorkload(w Workload, requireDigest bool) []string {
	return CheckWorkloadSized(w, requireDigest, ResourceSizing)
}

// CheckWorkloadSized is CheckWorkload against a given sizing table
// (PreviewSizing for the preview overlay).
func CheckWorkloadSized(w Workload, requireDigest bool, sizing map[string]Sizing) []string {
	p := &problems{prefix: fmt.Sprintf("%s %s/%s: ", w.Kind, w.Namespace, w.Name)}
	want, ok := sizing[w.Name]
	if !ok {
		p.add("not one of the ADR's services")
		return p.list
	}
	if w.Kind != want.Kind {
		p.add("is a %s, the ADR says %s", w.Kind, want.Kind)
	}
	for _, l := range RecommendedLabels {
		if w.Labels[l] == "" {
			p.add("label %s missing", l)
		}
		if w.Template.Labels[l] == "" {
			p.add("pod template label %s missing", l)
		}
	}
	spec := w.Template.Spec
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g != TerminationGracePeriodSeconds {
		p.add("terminationGracePeriodSeconds = %v, want %d (the services drain in %d s)", deref(g), TerminationGracePeriodSeconds, ShutdownSeconds)
	}
	checkPodSecurity(p, spec)
	if want.DedicatedNodePool != "" {
		if spec.NodeSelector[NodePoolLabel] != want.DedicatedNodePool {
			p.add("nodeSelector %s=%s missing (dedicated node pool)", NodePoolLabel, want.DedicatedNodePool)
		}
		tolerated := false
		for _, t := range spec.Tolerations {
			tolerated = tolerated || (t.Key == NodePoolLabel && t.Value == want.DedicatedNodePool && t.Effect == corev1.TaintEffectNoSchedule)
		}
		if !tolerated {
			p.add("no toleration for the %s=%s:NoSchedule taint", NodePoolLabel, want.DedicatedNodePool)
		}
	} else if _, ok := spec.NodeSelector[NodePoolLabel]; ok {
		p.add("pinned to a node pool; only the ADR's dedicated services are")
	}
	if len(spec.Containers) != 1 || spec.Containers[0].Name != w.Name {
		p.add("want exactly one container named %s", w.Name)
		return p.list
	}
	c := spec.Containers[0]
	checkImage(p, c.Image, requireDigest)
	checkQuantity(p, "cpu request", c.Resources.Requests[corev1.ResourceCPU], want.CPURequest)
	checkQuantity(p, "cpu limit", c.Resources.Limits[corev1.ResourceCPU], want.CPULimit)
	checkQuantity(p, "memory request", c.Resources.Requests[corev1.ResourceMemory], want.MemRequest)
	checkQuantity(p, "memory limit", c.Resources.Limits[corev1.ResourceMemory], want.MemLimit)
	checkProbe(p, "livenessProbe", c.LivenessProbe, Liveness)
	checkProbe(p, "readinessProbe", c.ReadinessProbe, Readiness)
	return p.list
}

func deref[T any](v *T) any {
	if v == nil {
		return "unset"
	}
	return *v
}

func checkImage(p *problems, image string, requireDigest bool) {
	if strings.HasSuffix(image, ":latest") || strings.Contains(image, ":latest@") {
		p.add("image %s uses :latest", image)
	}
	if requireDigest && !strings.Contains(image, "@sha256:") {
		p.add("image %s is not pinned by digest", image)
	}
}

func checkQuantity(p *problems, what string, got resource.Quantity, want string) {
	if got.Cmp(resource.MustParse(want)) != 0 {
		p.add("%s = %s, the ADR says %s", what, got.String(), want)
	}
}

func checkProbe(p *problems, name string, got *corev1.Probe, want Probe) {
	if got == nil || got.HTTPGet == nil {
		p.add("%s must be an httpGet probe", name)
		return
	}
	h := got.HTTPGet
	if h.Path != want.Path || h.Port != intstr.FromInt32(want.Port) || string(h.Scheme) != want.Scheme {
		p.add("%s probes %s %v %s, the ADR says %s %d %s", name, h.Scheme, h.Port.String(), h.Path, want.Scheme, want.Port, want.Path)
	}
	gotT := [5]int32{got.InitialDelaySeconds, got.PeriodSeconds, got.TimeoutSeconds, got.SuccessThreshold, got.FailureThreshold}
	wantT := [5]int32{want.InitialDelay, want.Period, want.Timeout, want.SuccessThreshold, want.FailureThreshold}
	if gotT != wantT {
		p.add("%s timings (initialDelay, period, timeout, success, failure) = %v, the ADR says %v", name, gotT, wantT)
	}
}

// safeSysctls are the namespaced sysctls Pod Security allows (baseline
// and restricted), as of Kubernetes 1.33.
var safeSysctls = []string{
	"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
	"net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
	"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
}

// checkPodSecurity applies the Pod Security Standard "restricted" (and
// the baseline it includes) to a pod spec.
func checkPodSecurity(p *problems, spec corev1.PodSpec) {
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		p.add("uses host namespaces")
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		p.add("pod securityContext.runAsNonRoot must be true")
	}
	if psc.RunAsUser == nil || *psc.RunAsUser != 65532 || psc.RunAsGroup == nil || *psc.RunAsGroup != 65532 {
		p.add("pod must run as 65532:65532 (the image's nonroot user)")
	}
	podSeccomp := psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	for _, s := range psc.Sysctls {
		if !slices.Contains(safeSysctls, s.Name) {
			p.add("sysctl %s is not in Pod Security's safe set", s.Name)
		}
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			p.add("volume %s is a hostPath", v.Name)
		}
	}
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil {
			p.add("container %s has no securityContext", c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			p.add("container %s is privileged", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			p.add("container %s must set allowPrivilegeEscalation: false", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			p.add("container %s must have a read-only root filesystem", c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			p.add("container %s must drop ALL capabilities", c.Name)
		} else {
			for _, a := range sc.Capabilities.Add {
				if a != "NET_BIND_SERVICE" {
					p.add("container %s adds capability %s (restricted allows only NET_BIND_SERVICE)", c.Name, a)
				}
			}
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			p.add("container %s runs as root", c.Name)
		}
		if !podSeccomp && (sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
			p.add("container %s has no RuntimeDefault seccomp profile", c.Name)
		}
		for _, port := range c.Ports {
			if port.HostPort != 0 {
				p.add("container %s uses hostPort %d", c.Name, port.HostPort)
			}
		}
	}
}

// CheckScaling holds the HPAs, PDBs and ServiceMonitors to the ADR: one of
// each per service, targeting it, scaling at CPU 80% and memory 85%,
// scraping /metrics on the ops port.
func CheckScaling(r *Rendered) []string {
	var out []string
	workloads := map[string]Workload{}
	for _, w := range r.Workloads() {
		workloads[w.Name] = w
	}
	hpas := map[string]*autoscalingv2.HorizontalPodAutoscaler{}
	for _, h := range All[*autoscalingv2.HorizontalPodAutoscaler](r) {
		hpas[h.Spec.ScaleTargetRef.Name] = h
	}
	// A PDB belongs to the service whose pods its selector matches (it may
	// select on labels other than the name: docs/operations/canary.md).
	pdbs := map[string]*policyv1.PodDisruptionBudget{}
	for _, d := range All[*policyv1.PodDisruptionBudget](r) {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if d.Spec.Selector == nil || err != nil || sel.Empty() {
			out = append(out, fmt.Sprintf("PodDisruptionBudget %s: selector %v does not select one service's pods", d.Name, d.Spec.Selector))
			continue
		}
		var matched []string
		for _, w := range workloads {
			if sel.Matches(labels.Set(w.Template.Labels)) {
				pdbs[w.Name] = d
				matched = append(matched, w.Name)
			}
		}
		if len(matched) > 1 {
			slices.Sort(matched)
			out = append(out, fmt.Sprintf("PodDisruptionBudget %s selects the pods of %v, not one service's", d.Name, matched))
		}
	}
	services := map[string]*corev1.Service{}
	for _, s := range All[*corev1.Service](r) {
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			services[s.Name] = s
		}
	}
	monitors := map[string]*monitoringv1.ServiceMonitor{}
	for _, m := range All[*monitoringv1.ServiceMonitor](r) {
		monitors[m.Spec.Selector.MatchLabels["app.kubernetes.io/name"]] = m
	}
	for _, svc := range Services {
		w, ok := workloads[svc]
		if !ok {
			out = append(out, svc+": no workload rendered")
			continue
		}
		h, ok := hpas[svc]
		switch {
		case !ok:
			out = append(out, svc+": no HorizontalPodAutoscaler")
		default:
			if h.Spec.ScaleTargetRef.Kind != w.Kind || h.Spec.ScaleTargetRef.APIVersion != "apps/v1" {
				out = append(out, fmt.Sprintf("%s: HPA targets %s %s, the workload is apps/v1 %s", svc, h.Spec.ScaleTargetRef.APIVersion, h.Spec.ScaleTargetRef.Kind, w.Kind))
			}
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
				out = append(out, svc+": HPA needs minReplicas ≥ 2 (one pod per disruption budget) and maxReplicas ≥ minReplicas")
			}
			got := map[corev1.ResourceName]int32{}
			for _, m := range h.Spec.Metrics {
				if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Target.Type == autoscalingv2.UtilizationMetricType && m.Resource.Target.AverageUtilization != nil {
					got[m.Resource.Name] = *m.Resource.Target.AverageUtilization
				}
			}
			if len(h.Spec.Metrics) != 2 || got[corev1.ResourceCPU] != ScaleCPUPercent || got[corev1.ResourceMemory] != ScaleMemoryPercent {
				out = append(out, fmt.Sprintf("%s: HPA scales at %v, the ADR says cpu %d%% and memory %d%%", svc, got, ScaleCPUPercent, ScaleMemoryPercent))
			}
		}
		if d, ok := pdbs[svc]; !ok {
			out = append(out, svc+": no PodDisruptionBudget selecting it")
		} else if d.Spec.MinAvailable == nil && d.Spec.MaxUnavailable == nil {
			out = append(out, svc+": PodDisruptionBudget sets neither minAvailable nor maxUnavailable")
		}
		s, ok := services[svc]
		if !ok {
			out = append(out, svc+": no Service")
			continue
		}
		opsPort := ""
		for _, port := range s.Spec.Ports {
			if port.Port == Liveness.Port && port.TargetPort.String() == "ops" {
				opsPort = port.Name
			}
		}
		m, ok := monitors[svc]
		switch {
		case !ok:
			out = append(out, svc+": no ServiceMonitor")
		case opsPort == "":
			out = append(out, fmt.Sprintf("%s: Service has no port %d → ops for Prometheus", svc, Liveness.Port))
		case len(m.Spec.Endpoints) != 1 || m.Spec.Endpoints[0].Port != opsPort || m.Spec.Endpoints[0].Path != "/metrics":
			out = append(out, fmt.Sprintf("%s: ServiceMonitor must scrape /metrics on port %q", svc, opsPort))
		}
	}
	return out
}

// CheckNamespaces holds the services' namespaces to PSS restricted
// (enforced) and Linkerd injection.
func CheckNamespaces(r *Rendered) []string {
	var out []string
	for _, ns := range All[*corev1.Namespace](r) {
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			out = append(out, "Namespace "+ns.Name+": Pod Security restricted is not enforced")
		}
		if ns.Annotations["linkerd.io/inject"] != "enabled" {
			out = append(out, "Namespace "+ns.Name+": Linkerd injection is not enabled")
		}
	}
	return out
}

package policy

import (
	"fmt"
	"regexp"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LitmusChaos's API, litmuschaos.io/v1alpha1, as Litmus 3.x defines it:
// the ChaosEngine and ChaosExperiment spec fields of chaos-operator's
// api/litmuschaos/v1alpha1/chaosengine_types.go and
// chaosexperiment_types.go (github.com/litmuschaos/chaos-operator, read at
// 3.18 and checked against the CRDs litmus-helm's litmus-core 3.29.0 chart
// installs, charts/litmus-core/crds/*.yaml; both Apache-2.0). Its Go
// module is not served to this module, so the types are declared here,
// field by field; decoding is strict, so a field Litmus 3.x does not have
// (annotationCheck, removed in 3.0; a misspelt probe field) fails. The CRD's
// own constraints that decoding cannot express (patterns, enums, required
// fields, runProperties durations) are checked by validateLitmus.
//
// Status fields are left out: rendered manifests carry none.

// ChaosEngine is litmuschaos.io/v1alpha1 ChaosEngine.
type ChaosEngine struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ChaosEngineSpec `json:"spec"`
}

// ChaosEngineSpec is the engine's spec.
type ChaosEngineSpec struct {
	Appinfo                       ApplicationParams `json:"appinfo,omitempty"`
	DefaultHealthCheck            bool              `json:"defaultHealthCheck,omitempty"`
	ChaosServiceAccount           string            `json:"chaosServiceAccount"`
	Components                    *EngineComponents `json:"components,omitempty"`
	Experiments                   []ExperimentList  `json:"experiments"`
	JobCleanUpPolicy              string            `json:"jobCleanUpPolicy,omitempty"`
	AuxiliaryAppInfo              string            `json:"auxiliaryAppInfo,omitempty"`
	EngineState                   string            `json:"engineState"`
	TerminationGracePeriodSeconds int64             `json:"terminationGracePeriodSeconds,omitempty"`
	Selectors                     *Selector         `json:"selectors,omitempty"`
}

// ApplicationParams is spec.appinfo: the target.
type ApplicationParams struct {
	Appns    string `json:"appns,omitempty"`
	Applabel string `json:"applabel,omitempty"`
	AppKind  string `json:"appkind,omitempty"`
}

// Selector is spec.selectors, the alternative to appinfo.
type Selector struct {
	Workloads []struct {
		Kind      string `json:"kind"`
		Namespace string `json:"namespace"`
		Names     string `json:"names,omitempty"`
		Labels    string `json:"labels,omitempty"`
	} `json:"workloads,omitempty"`
	Pods []struct {
		Namespace string `json:"namespace"`
		Names     string `json:"names"`
	} `json:"pods,omitempty"`
}

// EngineComponents is spec.components (the runner's settings).
type EngineComponents struct {
	Runner struct {
		Image             string                        `json:"image,omitempty"`
		Type              string                        `json:"type,omitempty"`
		Args              []string                      `json:"args,omitempty"`
		Command           []string                      `json:"command,omitempty"`
		ImagePullPolicy   corev1.PullPolicy             `json:"imagePullPolicy,omitempty"`
		ImagePullSecrets  []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
		RunnerAnnotations map[string]string             `json:"runnerAnnotations,omitempty"`
		RunnerLabels      map[string]string             `json:"runnerLabels,omitempty"`
		NodeSelector      map[string]string             `json:"nodeSelector,omitempty"`
		Tolerations       []corev1.Toleration           `json:"tolerations,omitempty"`
		Resources         corev1.ResourceRequirements   `json:"resources,omitempty"`
	} `json:"runner"`
}

// ExperimentList is one of spec.experiments.
type ExperimentList struct {
	Name string               `json:"name"`
	Spec ExperimentAttributes `json:"spec"`
}

// ExperimentAttributes is an experiment's overrides and probes.
type ExperimentAttributes struct {
	Components ExperimentComponents `json:"components,omitempty"`
	Probe      []ProbeAttributes    `json:"probe,omitempty"`
}

// ExperimentComponents is an experiment's env and pod settings.
type ExperimentComponents struct {
	ENV                        []corev1.EnvVar               `json:"env,omitempty"`
	ExperimentAnnotations      map[string]string             `json:"experimentAnnotations,omitempty"`
	ExperimentImage            string                        `json:"experimentImage,omitempty"`
	ExperimentImagePullSecrets []corev1.LocalObjectReference `json:"experimentImagePullSecrets,omitempty"`
	NodeSelector               map[string]string             `json:"nodeSelector,omitempty"`
	StatusCheckTimeouts        *struct {
		Delay   int `json:"delay,omitempty"`
		Timeout int `json:"timeout,omitempty"`
	} `json:"statusCheckTimeouts,omitempty"`
	Resources   corev1.ResourceRequirements `json:"resources,omitempty"`
	Tolerations []corev1.Toleration         `json:"tolerations,omitempty"`
}

// ProbeAttributes is one probe.
type ProbeAttributes struct {
	Name            string           `json:"name"`
	Type            string           `json:"type"`
	K8sProbeInputs  *K8sProbeInputs  `json:"k8sProbe/inputs,omitempty"`
	HTTPProbeInputs *HTTPProbeInputs `json:"httpProbe/inputs,omitempty"`
	CmdProbeInputs  *CmdProbeInputs  `json:"cmdProbe/inputs,omitempty"`
	PromProbeInputs *PromProbeInputs `json:"promProbe/inputs,omitempty"`
	RunProperties   RunProperty      `json:"runProperties"`
	Mode            string           `json:"mode"`
	Data            string           `json:"data,omitempty"`
}

// K8sProbeInputs checks a resource's presence (or creates/deletes one).
type K8sProbeInputs struct {
	Group         string `json:"group,omitempty"`
	Version       string `json:"version"`
	Resource      string `json:"resource"`
	ResourceNames string `json:"resourceNames,omitempty"`
	Namespace     string `json:"namespace,omitempty"`
	FieldSelector string `json:"fieldSelector,omitempty"`
	LabelSelector string `json:"labelSelector,omitempty"`
	Operation     string `json:"operation"`
}

// HTTPProbeInputs calls a URL and compares the response code.
type HTTPProbeInputs struct {
	URL                string `json:"url"`
	InsecureSkipVerify bool   `json:"insecureSkipVerify,omitempty"`
	Method             struct {
		Get *struct {
			Criteria     string `json:"criteria"`
			ResponseCode string `json:"responseCode"`
		} `json:"get,omitempty"`
		Post *struct {
			ContentType  string `json:"contentType,omitempty"`
			Body         string `json:"body,omitempty"`
			BodyPath     string `json:"bodyPath,omitempty"`
			Criteria     string `json:"criteria"`
			ResponseCode string `json:"responseCode"`
		} `json:"post,omitempty"`
	} `json:"method"`
}

// Comparator compares a probe's output.
type Comparator struct {
	Type     string `json:"type,omitempty"`
	Criteria string `json:"criteria"`
	Value    string `json:"value"`
}

// CmdProbeInputs runs a command (inline or in a source pod).
type CmdProbeInputs struct {
	Command    string         `json:"command"`
	Comparator Comparator     `json:"comparator"`
	Source     map[string]any `json:"source,omitempty"`
}

// PromProbeInputs runs a PromQL query.
type PromProbeInputs struct {
	Endpoint   string     `json:"endpoint"`
	Query      string     `json:"query,omitempty"`
	QueryPath  string     `json:"queryPath,omitempty"`
	Comparator Comparator `json:"comparator"`
}

// RunProperty is a probe's timing. In 3.x the durations are strings
// (Go durations: "5s"); retry and attempt are counts.
type RunProperty struct {
	ProbeTimeout         string `json:"probeTimeout"`
	Interval             string `json:"interval"`
	Retry                int    `json:"retry,omitempty"`
	Attempt              int    `json:"attempt,omitempty"`
	ProbePollingInterval string `json:"probePollingInterval,omitempty"`
	InitialDelaySeconds  int    `json:"initialDelaySeconds,omitempty"`
	InitialDelay         string `json:"initialDelay,omitempty"`
	EvaluationTimeout    string `json:"evaluationTimeout,omitempty"`
	Verbosity            string `json:"verbosity,omitempty"`
	StopOnFailure        bool   `json:"stopOnFailure,omitempty"`
}

// ChaosExperiment is litmuschaos.io/v1alpha1 ChaosExperiment.
type ChaosExperiment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		Definition ExperimentDef `json:"definition"`
	} `json:"spec"`
}

// ExperimentDef is a ChaosExperiment's definition.
type ExperimentDef struct {
	Labels                map[string]string          `json:"labels"`
	Image                 string                     `json:"image"`
	ImagePullPolicy       corev1.PullPolicy          `json:"imagePullPolicy,omitempty"`
	Scope                 string                     `json:"scope"`
	Permissions           []rbacv1.PolicyRule        `json:"permissions"`
	ENVList               []corev1.EnvVar            `json:"env"`
	Command               []string                   `json:"command"`
	Args                  []string                   `json:"args"`
	ConfigMaps            []map[string]any           `json:"configMaps,omitempty"`
	Secrets               []map[string]any           `json:"secrets,omitempty"`
	HostFileVolumes       []map[string]any           `json:"hostFileVolumes,omitempty"`
	ExperimentAnnotations map[string]string          `json:"experimentAnnotations,omitempty"`
	SecurityContext       *ExperimentSecurityContext `json:"securityContext,omitempty"`
	HostPID               bool                       `json:"hostPID,omitempty"`
}

// ExperimentSecurityContext is the experiment pod's security context.
type ExperimentSecurityContext struct {
	PodSecurityContext       *corev1.PodSecurityContext `json:"podSecurityContext,omitempty"`
	ContainerSecurityContext *corev1.SecurityContext    `json:"containerSecurityContext,omitempty"`
}

// The CRDs' patterns (litmus-core 3.29.0 crds/chaosengine_crd.yaml).
var (
	litmusProbeType   = regexp.MustCompile(`^(k8sProbe|httpProbe|cmdProbe|promProbe|sloProbe)$`)
	litmusProbeMode   = regexp.MustCompile(`^(SOT|EOT|Edge|Continuous|OnChaos)$`)
	litmusAppKind     = regexp.MustCompile(`^(^$|deployment|statefulset|daemonset|deploymentconfig|rollout)$`)
	litmusCleanUp     = regexp.MustCompile(`^(delete|retain)$`)
	litmusEngineState = regexp.MustCompile(`^(active|stop)$`)
	litmusK8sOp       = regexp.MustCompile(`^(present|absent|create|delete)$`)
)

func init() {
	goTypes["litmuschaos.io/v1alpha1/ChaosEngine"] = func() any { return &ChaosEngine{} }
	goTypes["litmuschaos.io/v1alpha1/ChaosExperiment"] = func() any { return &ChaosExperiment{} }
	validators["litmuschaos.io/v1alpha1/ChaosEngine"] = func(v any) error { return validateEngine(v.(*ChaosEngine)) }
	validators["litmuschaos.io/v1alpha1/ChaosExperiment"] = func(v any) error {
		e := v.(*ChaosExperiment)
		if e.Spec.Definition.Image == "" {
			return fmt.Errorf("spec.definition.image is required")
		}
		return nil
	}
}

// validateEngine checks what the CRD's schema and the operator require
// beyond the fields' names and types.
func validateEngine(e *ChaosEngine) error {
	s := e.Spec
	if s.ChaosServiceAccount == "" || len(s.Experiments) == 0 {
		return fmt.Errorf("spec.chaosServiceAccount and spec.experiments are required")
	}
	if !litmusEngineState.MatchString(s.EngineState) {
		return fmt.Errorf("spec.engineState %q: want active or stop", s.EngineState)
	}
	if s.JobCleanUpPolicy != "" && !litmusCleanUp.MatchString(s.JobCleanUpPolicy) {
		return fmt.Errorf("spec.jobCleanUpPolicy %q: want delete or retain", s.JobCleanUpPolicy)
	}
	if !litmusAppKind.MatchString(s.Appinfo.AppKind) {
		return fmt.Errorf("spec.appinfo.appkind %q is not a kind Litmus targets", s.Appinfo.AppKind)
	}
	// chaos-operator (controllers/chaosengine_controller.go) refuses an
	// engine with one of appkind and applabel but not the other.
	if (s.Appinfo.AppKind == "") != (s.Appinfo.Applabel == "") {
		return fmt.Errorf("spec.appinfo: appkind and applabel go together (the operator refuses one without the other)")
	}
	for _, x := range s.Experiments {
		for _, p := range x.Spec.Probe {
			where := fmt.Sprintf("experiment %s probe %q", x.Name, p.Name)
			if p.Name == "" || !litmusProbeType.MatchString(p.Type) || !litmusProbeMode.MatchString(p.Mode) {
				return fmt.Errorf("%s: name, type (%s) and mode (%s) must be set to Litmus's values", where, p.Type, p.Mode)
			}
			rp := p.RunProperties
			if rp.ProbeTimeout == "" || rp.Interval == "" {
				return fmt.Errorf("%s: runProperties.probeTimeout and interval are required", where)
			}
			// litmus-go pkg/types/types.go parseProbeTimeouts: Go durations.
			for field, d := range map[string]string{"probeTimeout": rp.ProbeTimeout, "interval": rp.Interval,
				"probePollingInterval": rp.ProbePollingInterval, "initialDelay": rp.InitialDelay, "evaluationTimeout": rp.EvaluationTimeout} {
				if d == "" {
					continue
				}
				if _, err := time.ParseDuration(d); err != nil {
					return fmt.Errorf("%s: runProperties.%s %q is not a duration (3.x wants strings like \"5s\")", where, field, d)
				}
			}
			switch p.Type {
			case "httpProbe":
				in := p.HTTPProbeInputs
				if in == nil || in.URL == "" || (in.Method.Get == nil && in.Method.Post == nil) {
					return fmt.Errorf("%s: httpProbe/inputs needs url and a method", where)
				}
			case "k8sProbe":
				in := p.K8sProbeInputs
				if in == nil || in.Version == "" || in.Resource == "" || !litmusK8sOp.MatchString(in.Operation) {
					return fmt.Errorf("%s: k8sProbe/inputs needs version, resource and an operation", where)
				}
			case "promProbe":
				if in := p.PromProbeInputs; in == nil || in.Endpoint == "" {
					return fmt.Errorf("%s: promProbe/inputs needs an endpoint", where)
				}
			case "cmdProbe":
				if in := p.CmdProbeInputs; in == nil || in.Command == "" {
					return fmt.Errorf("%s: cmdProbe/inputs needs a command", where)
				}
			}
		}
	}
	return nil
}

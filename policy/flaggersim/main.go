// Command flaggersim runs Flagger's own controllers (v1.36.1) over a fake
// cluster, so policy/ can judge the objects as they are once Flagger has
// rewritten them. It reads YAML documents on stdin (Deployments, Services,
// HorizontalPodAutoscalers, Canaries), takes each Canary through the steps
// of Flagger's scheduler (pkg/controller/scheduler.go, advanceCanary) up to
// its first traffic step, leaving a suspended one alone as advanceCanary
// does, and writes every Deployment, Service, HorizontalPodAutoscaler and
// HTTPRoute as YAML on stdout.
//
// It is its own module because Flagger's pkg/canary and clientset import
// k8s.io/api/autoscaling/v2beta2, which policy/'s k8s.io/api (v0.37) no
// longer has; here Flagger's own k8s.io versions apply.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"github.com/fluxcd/flagger/pkg/canary"
	flaggerfake "github.com/fluxcd/flagger/pkg/client/clientset/versioned/fake"
	"github.com/fluxcd/flagger/pkg/router"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

// Flagger's command-line defaults (cmd/flagger/main.go): the pod labels it
// may select by, and the label prefixes it copies onto the primary
// Deployment's own metadata (none).
var (
	selectorLabels     = strings.Split("app,name,app.kubernetes.io/name", ",")
	includeLabelPrefix = strings.Split("", ",")
)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "flaggersim:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	var objs []runtime.Object
	var canaries []*flaggerv1.Canary
	for _, doc := range bytes.Split(append([]byte("\n"), raw...), []byte("\n---")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return err
		}
		var o runtime.Object
		switch tm.APIVersion + "/" + tm.Kind {
		case "apps/v1/Deployment":
			o = &appsv1.Deployment{}
		case "v1/Service":
			o = &corev1.Service{}
		case "autoscaling/v2/HorizontalPodAutoscaler":
			o = &autoscalingv2.HorizontalPodAutoscaler{}
		case "flagger.app/v1beta1/Canary":
			o = &flaggerv1.Canary{}
		default:
			return fmt.Errorf("unexpected %s %s", tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, o); err != nil {
			return err
		}
		if c, ok := o.(*flaggerv1.Canary); ok {
			canaries = append(canaries, c)
		} else {
			objs = append(objs, o)
		}
	}

	kube := kubefake.NewSimpleClientset(objs...)
	var flaggerObjs []runtime.Object
	for _, c := range canaries {
		flaggerObjs = append(flaggerObjs, c)
	}
	flagger := flaggerfake.NewSimpleClientset(flaggerObjs...)
	log := zap.NewNop().Sugar()
	factory := canary.NewFactory(kube, flagger, &canary.NopTracker{}, selectorLabels, includeLabelPrefix, log)
	routers := router.NewFactory(nil, kube, flagger, "", "", log, flagger, true)
	for _, cd := range canaries {
		// advanceCanary returns for a suspended Canary before it touches
		// anything (pkg/controller/scheduler.go: "skipping canary run as
		// object is suspended"): no primary, no Services or route of its
		// own, the target as it was.
		if cd.Spec.Suspend {
			continue
		}
		if err := initialize(factory, routers, cd); err != nil {
			return fmt.Errorf("canary %s: %w", cd.Name, err)
		}
	}
	return dump(kube, flagger, out)
}

// initialize is advanceCanary's sequence for a new canary, then the start
// of its analysis: the canary scaled back up and the route at the first
// step's weight.
func initialize(canaries *canary.Factory, routers *router.Factory, cd *flaggerv1.Canary) error {
	// Past Initializing, so the controllers do not wait for pods to become
	// ready: a fake cluster runs none.
	cd = cd.DeepCopy()
	cd.Status.Phase = flaggerv1.CanaryPhaseProgressing
	ctrl := canaries.Controller(cd.Spec.TargetRef.Kind)
	label, value, ports, err := ctrl.GetMetadata(cd)
	if err != nil {
		return err
	}
	kubeRouter := routers.KubernetesRouter(cd.Spec.TargetRef.Kind, label, value, ports)
	if err := kubeRouter.Initialize(cd); err != nil {
		return err
	}
	meshRouter := routers.MeshRouter(cd.Spec.Provider, label)
	if _, err := ctrl.Initialize(cd); err != nil {
		return err
	}
	if cd.Spec.AutoscalerRef != nil {
		if err := canaries.ScalerReconciler(cd.Spec.AutoscalerRef.Kind).ReconcilePrimaryScaler(cd, true); err != nil {
			return err
		}
	}
	if err := kubeRouter.Reconcile(cd); err != nil {
		return err
	}
	if err := meshRouter.Reconcile(cd); err != nil {
		return err
	}
	// The analysis: canary back up, first step's weight on the route.
	if err := ctrl.ScaleFromZero(cd); err != nil {
		return err
	}
	first := 0
	if a := cd.GetAnalysis(); a != nil && len(a.StepWeights) > 0 {
		first = a.StepWeights[0]
	}
	return meshRouter.SetRoutes(cd, 100-first, first, false)
}

func dump(kube *kubefake.Clientset, flagger *flaggerfake.Clientset, out io.Writer) error {
	ctx := context.Background()
	var docs []any
	deps, err := kube.AppsV1().Deployments("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range deps.Items {
		d := &deps.Items[i]
		d.APIVersion, d.Kind = "apps/v1", "Deployment"
		docs = append(docs, d)
	}
	svcs, err := kube.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range svcs.Items {
		s := &svcs.Items[i]
		s.APIVersion, s.Kind = "v1", "Service"
		docs = append(docs, s)
	}
	hpas, err := kube.AutoscalingV2().HorizontalPodAutoscalers("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range hpas.Items {
		h := &hpas.Items[i]
		h.APIVersion, h.Kind = "autoscaling/v2", "HorizontalPodAutoscaler"
		docs = append(docs, h)
	}
	routes, err := flagger.GatewayapiV1().HTTPRoutes("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range routes.Items {
		r := &routes.Items[i]
		r.APIVersion, r.Kind = "gateway.networking.k8s.io/v1", "HTTPRoute"
		docs = append(docs, r)
	}
	var parts []string
	for _, d := range docs {
		b, err := yaml.Marshal(d)
		if err != nil {
			return err
		}
		parts = append(parts, string(b))
	}
	sort.Strings(parts)
	_, err = io.WriteString(out, strings.Join(parts, "---\n"))
	return err
}

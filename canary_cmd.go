package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/canary"
	"github.com/darktower/delivery/pipelines/cluster"
	"github.com/darktower/delivery/pipelines/flow"
	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/preview"
	"github.com/darktower/delivery/pipelines/scan"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
)

// targetFlags pick a cluster: a preview by pull request, a kind cluster
// by name, or any cluster by kubeconfig.
type targetFlags struct {
	pr         *int
	name       *string
	kubeconfig *string
	state      *string
}

func declareTargetFlags(fs *pflag.FlagSet) targetFlags {
	return targetFlags{
		pr:         fs.Int("pr", 0, "the preview of this pull request (cluster pr-N)"),
		name:       fs.String("cluster", "", "a kind cluster by name (e.g. pr-42)"),
		kubeconfig: fs.String("kubeconfig", "", "any cluster, by kubeconfig"),
		state:      fs.String("state-dir", kindcluster.DefaultStateDir(), "where each kind cluster's kubeconfig is kept"),
	}
}

// kind resolves the flags to a kind cluster (needed where images are
// loaded into the nodes).
func (f targetFlags) kind(cmd string) (*kindcluster.Cluster, error) {
	name := *f.name
	if *f.pr > 0 {
		if name != "" {
			return nil, usageError{cmd + ": give --pr N or --cluster NAME, not both"}
		}
		name = preview.Name(*f.pr)
	}
	if name == "" {
		return nil, usageError{cmd + " needs the cluster: --pr N (a preview) or --cluster NAME (a kind cluster)"}
	}
	c := &kindcluster.Cluster{Name: name, Kubeconfig: kindcluster.KubeconfigPath(*f.state, name)}
	if _, err := os.Stat(c.Kubeconfig); err != nil {
		if err := kindcluster.ExportKubeconfig(name, c.Kubeconfig); err != nil {
			return nil, fmt.Errorf("no kubeconfig for cluster %s (is it up? cluster list shows the clusters): %w", name, err)
		}
	}
	return c, nil
}

// client resolves the flags to an API client.
func (f targetFlags) client(cmd string) (*cluster.Client, error) {
	if *f.kubeconfig != "" {
		if *f.pr > 0 || *f.name != "" {
			return nil, usageError{cmd + ": give one of --pr, --cluster or --kubeconfig"}
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", *f.kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", *f.kubeconfig, err)
		}
		return cluster.New(cfg)
	}
	c, err := f.kind(cmd)
	if err != nil {
		return nil, err
	}
	client, _, err := c.Client()
	return client, err
}

// runCanaryInstall is `canary install`: Flagger, Traefik, the Canaries
// (infra/overlays/preview/canary) and their load into a preview's kind
// cluster.
func runCanaryInstall(fs *pflag.FlagSet) action {
	cf := declareTargetFlags(fs)
	namespace := fs.String("namespace", "preview", "the services' namespace")
	workers := fs.Int("load-workers", 300, "API rounds the canaries' load makes at once, each every 2 s, once a Canary's pre-rollout webhook starts it")
	// Flagger's and Traefik's images come from build-all --images
	// images/platform (judged and signed as build-all does by default).
	vulnDB := fs.String("vuln-db", "", "the Flagger and Traefik images' vulnerability gate: a prepared Trivy DB, as build-all's --vuln-db (default: build-all's source)")
	vulnSource := fs.String("vuln-source", scan.SourceAuto, "the Flagger and Traefik images' vulnerability source, as build-all's --vuln-source")
	imagesOut := fs.String("images-out", "", "keep the Flagger and Traefik images' build-all output (OCI layout, SBOMs, scan reports, signatures, summary.md) in this directory (default: a temporary one, removed once they are loaded)")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		c, err := cf.kind("canary install")
		if err != nil {
			return err
		}
		client, _, err := c.Client()
		if err != nil {
			return err
		}
		root, err := os.Getwd()
		if err != nil {
			return err
		}
		if *workers < 1 || *workers > 1024 {
			return usageError{fmt.Sprintf("--load-workers %d: want 1 to 1024", *workers)}
		}
		in, err := canary.Install(ctx, canary.InstallOptions{Root: root, Cluster: c, Client: client, Namespace: *namespace, LoadWorkers: *workers, Progress: stdout,
			Images: flow.BuildAllOptions{VulnDB: *vulnDB, VulnSource: *vulnSource, Out: *imagesOut}})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "canary: Flagger %s and Traefik %s (Gateway API %s) run in %s; canaries: %v; suspended (canary roll runs their analysis): %v; their load (%s/%s) waits for each analysis's pre-rollout webhook\n",
			in.FlaggerVersion, in.TraefikVersion, in.GatewayAPIVersion, c.Name, in.Canaries, in.Suspended, *namespace, canary.LoadDeployment)
		return nil
	}
}

// runCanaryWatch is `canary watch --service S`: follows the service's
// Canary, printing weight, failed checks and Flagger's events; exit 0 on
// promotion, 1 on rollback (the failing check named).
func runCanaryWatch(fs *pflag.FlagSet) action {
	cf := declareTargetFlags(fs)
	service := fs.String("service", "", "the canaried service (its Canary's name), e.g. global-controller")
	namespace := fs.String("namespace", "preview", "the services' namespace")
	awaitStart := fs.Bool("wait-for-start", true, "ignore a finished analysis until a new one starts (for a watch begun right after a release); false reports the current one")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up after this long")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		if *service == "" {
			return usageError{"canary watch needs --service NAME (global-controller or meeting-controller)"}
		}
		client, err := cf.client("canary watch")
		if err != nil {
			return err
		}
		out, err := canary.Watch(ctx, canary.WatchOptions{Client: client, Namespace: *namespace, Name: *service,
			AwaitStart: *awaitStart, Timeout: *timeout, Progress: stdout})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "canary %s: promoted (%s)\n", *service, out.Phase)
		return nil
	}
}

// runCanaryRoll is `canary roll --service S [--image REF]`: the
// pipeline's own rollout of a workload Flagger cannot canary, each step
// judged by the analysis of a Canary (--analysis-of): a StatefulSet
// (ac-service) partition by partition, of a new image or of the release
// it holds; a Deployment whose traffic no HTTP route can weight
// (media-handler) as a pod-weighted canary beside it (--steps canary
// pods). Exit 0 on promotion, 1 on rollback (the failing check named).
func runCanaryRoll(fs *pflag.FlagSet) action {
	cf := declareTargetFlags(fs)
	service := fs.String("service", "ac-service", "the StatefulSet or Deployment (and its container) to roll out: ac-service or media-handler")
	namespace := fs.String("namespace", "preview", "the services' namespace")
	image := fs.String("image", "", "the release: the container's new image (a digest reference, e.g. registry/darktower/ac-service@sha256:...); without it, the release a StatefulSet holds (applied with its partition at the replicas) is rolled on")
	release := fs.String("release", "", "the release's name on the pod template (default: the image's digest or tag)")
	analysisOf := fs.String("analysis-of", "", "the Canary whose analysis (interval, threshold, webhooks, MetricTemplates) judges each step (default: global-controller's for a StatefulSet, the Deployment's own suspended Canary for a Deployment)")
	steps := fs.Int32Slice("steps", []int32{1}, "a Deployment's canary pods at each step, e.g. 1,2 (new sessions reach them in proportion to the pods)")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		name := *release
		if name == "" && *image != "" {
			name = releaseName(*image)
		}
		client, err := cf.client("canary roll")
		if err != nil {
			return err
		}
		kind, err := canary.RolloutKind(ctx, client, *namespace, *service)
		if err != nil {
			return err
		}
		of := *analysisOf
		if of == "" {
			of = "global-controller"
			if kind == "Deployment" {
				of = *service
			}
		}
		a, err := canary.ReadAnalysis(ctx, client, *namespace, of)
		if err != nil {
			return err
		}
		o := canary.RollOptions{Client: client, Namespace: *namespace, Analysis: a, Progress: stdout, Steps: *steps,
			Release: canary.Release{Service: *service, Name: name, Image: *image}}
		roll := canary.RollStatefulSet
		if kind == "Deployment" {
			roll = canary.RollDeployment
		}
		res, err := roll(ctx, o)
		if err != nil {
			return err
		}
		if !res.Promoted {
			return &canary.RolledBackError{Canary: *service, Reason: res.Reason}
		}
		fmt.Fprintf(stdout, "canary %s: promoted (%s)\n", *service, res.Summary())
		return nil
	}
}

// releaseName names a release after its image reference: the digest, else
// the tag (a registry's port is neither), else the whole reference.
func releaseName(ref string) string {
	if _, digest, ok := strings.Cut(ref, "@"); ok {
		return digest
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return ref
}

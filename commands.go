package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// action is a command's work, run once its flags are parsed.
type action func(ctx context.Context, stdout, stderr io.Writer) error

// leaf is a command that does the work: declare declares its flags on
// the command's flag set and returns what it runs with them.
type leaf struct {
	name, summary string
	declare       func(fs *pflag.FlagSet) action
	// noArgs is the usage error for a stray argument; "" is a generic one.
	noArgs string
}

// group is a command that only has subcommands (sim up, chaos run, ...).
type group struct {
	name, summary string
	subs          []leaf
}

// topLevel is the command list; the names are the Dagger module's
// functions' and the scripts', so they do not change.
var topLevel = []leaf{
	{name: "version", summary: "print the pipeline's version and build information", declare: runVersion, noArgs: "version takes no arguments"},
	{name: "build-all", summary: "build the services' OCI images into dist/ (the main job); --images images/platform: Flagger and Traefik's", declare: runBuildAll},
	{name: "node-image", summary: "build (or reuse) the kind node image from Debian and the Go module proxy", declare: runNodeImage},
	{name: "validate", summary: "validate --server: apply every infra/ overlay to the simulated cluster (or --kubeconfig) and run it", declare: runValidate},
	{name: "release", summary: "release --tag vX.Y.Z --push REGISTRY: build-all for a release tag; signed (never with the development key) and published", declare: runRelease},
	{name: "export-image", summary: "export-image --service NAME --file F.tar: one image of a build as an OCI layout tarball (docker load, Dagger's import)", declare: runExportImage},
	{name: "ci", summary: "the pull-request check: gofmt, go vet and go test of every module, then build-all; with --cluster-checks --pr N the build deployed into cluster pr-N and the chaos stage; records dist/ci.json", declare: runCI},
	{name: "ci-verdict", summary: "ci-verdict --out DIR: print a ci run's checks from DIR/ci.json and fail if any failed", declare: runCIVerdict},
	{name: "promote", summary: "promote --tag vX.Y.Z --from REGISTRY/PREFIX --to REGISTRY/PREFIX --key cosign.pub: verify a release's images (signature, SBOM, vulnerability gate, provenance), copy them with their signatures and attestations to production, pin infra/overlays/prod", declare: runPromote},
	{name: "verify", summary: "verify --image REF --key cosign.pub: check an image's signature and its SBOM, vulnerability and provenance attestations", declare: runVerify},
	{name: "go-vuln-db", summary: "go-vuln-db --out DIR: a Trivy DB built from golang.org/x/vulndb fetched through the Go module proxy (for --vuln-db, air-gapped)", declare: runGoVulnDB},
	{name: "update-base", summary: "pin the specs' base images (images/base.lock.json) and the Dagger module's Go image (ci/main.go) to their current digests", declare: runUpdateBase,
		noArgs: "update-base takes no arguments (it reads the bases from images/*.yaml)"},
	{name: "dev-secrets", summary: "print fresh local-environment secrets as Kubernetes Secrets (infra/local/setup.sh)", declare: runDevSecrets},
	{name: "pin-images", summary: "pin an overlay's images to the digests of a build (dist/manifest.json)", declare: runPinImages},
	{name: "platform-charts", summary: "list infra/platform/charts.yaml as tab-separated lines (infra/local/setup.sh)", declare: runPlatformCharts},
}

var groups = []group{
	{name: "sim", summary: "the simulated cluster: sim up | down | status | kubeconfig", subs: []leaf{
		{name: "up", summary: "start the simulated cluster (kube-apiserver and kwok built from the Go module proxy)", declare: runSimUp},
		{name: "down", summary: "stop the simulated cluster", declare: runSimDown},
		{name: "status", summary: "the simulated cluster's processes and health", declare: runSimStatus},
		{name: "kubeconfig", summary: "print the simulated cluster's kubeconfig path", declare: runSimKubeconfig},
	}},
	{name: "cluster", summary: "the real cluster (kind): cluster up | down | list | status | kubeconfig", subs: []leaf{
		{name: "up", summary: "create the kind cluster (infra/local/kind-config.yaml) and wait for its nodes", declare: runClusterUp},
		{name: "down", summary: "delete the kind cluster", declare: runClusterDown},
		{name: "list", summary: "list the kind clusters on this Docker engine", declare: runClusterList},
		{name: "status", summary: "the cluster's nodes; fails if one is not running", declare: runClusterStatus},
		{name: "kubeconfig", summary: "print the path of the cluster's kubeconfig", declare: runClusterKubeconfig},
	}},
	{name: "preview", summary: "a pull request's preview: preview up --pr N | down --pr N | list | reap --ttl 72h", subs: []leaf{
		{name: "up", summary: "up --pr N: a kind cluster pr-N running the build in --dist", declare: runPreviewUp},
		{name: "down", summary: "down --pr N: delete the preview of pull request N", declare: runPreviewDown},
		{name: "list", summary: "list the previews, their age, commit and expiry", declare: runPreviewList},
		{name: "reap", summary: "reap --ttl 72h: delete the previews older than the TTL", declare: runPreviewReap},
	}},
	{name: "canary", summary: "canary install --pr N | watch --service S | roll --service ac-service: Flagger and the Gateway into a preview; follow a service's canary, or roll a StatefulSet out by partition under the same analysis, to promotion (exit 0) or rollback (exit 1)", subs: []leaf{
		{name: "install", summary: "install --pr N: Flagger v1.36.1, Traefik (the Gateway) and the Canaries into preview pr-N", declare: runCanaryInstall},
		{name: "watch", summary: "watch --service S [--pr N | --cluster NAME | --kubeconfig F]: follow the service's Canary; exit 0 on promotion, 1 on rollback", declare: runCanaryWatch},
		{name: "roll", summary: "roll --service ac-service [--image REF] [--pr N | --cluster NAME | --kubeconfig F]: a StatefulSet's partitioned rollout (of REF, or of the release it holds), each step judged by a Canary's analysis; exit 0 on promotion, 1 on rollback", declare: runCanaryRoll},
	}},
	{name: "flags", summary: "the feature-flag catalogue (infra/flags/catalog.yaml): flags sync --etcd ENDPOINTS [--dry-run] | generate", subs: []leaf{
		{name: "sync", summary: "sync --etcd ENDPOINTS [--prefix P] [--env E] [--dry-run]: make etcd's flags equal the catalogue, printing the diff", declare: runFlagsSync},
		{name: "generate", summary: "write the services' static defaults (services/internal/flags/catalog_gen.go) from the catalogue; --check fails if out of date", declare: runFlagsGenerate},
	}},
	{name: "tools-path", summary: "tools-path etcd: print a tool's path, building it once from the Go module proxy (the services' tests use it)", subs: []leaf{
		{name: "etcd", summary: "print the etcd binary's path (built once into ~/.cache/darktower/upstream)", declare: runToolsPathEtcd},
	}},
	{name: "chaos", summary: "chaos run --cluster NAME | --kubeconfig F [--only E,...] [--junit F] [--summary F]: the repository's chaos engines against a cluster (Litmus where installed, else the pipeline's executor)", subs: []leaf{
		{name: "run", summary: "chaos run --cluster NAME | --kubeconfig F: the chaos stage against a cluster", declare: runChaos},
	}},
}

// newRoot builds the command tree writing to stdout and stderr. Errors are
// printed by run, which also picks the exit code, so cobra prints none.
func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "darktower",
		Short:         "the Dark Tower delivery pipeline",
		SilenceErrors: true,
		SilenceUsage:  true,
		// A typo one or two letters off is suggested.
		SuggestionsMinimumDistance: 2,
		Args:                       unknownCommand,
		// No command: the list, and a usage exit status (2).
		RunE: func(cmd *cobra.Command, _ []string) error {
			usage(cmd, stdout)
			return usageError{}
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	// pflag's errors ("unknown flag: --x") say what is wrong; add where the
	// flags are listed, and make them usage errors (exit 2).
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{fmt.Sprintf("%s (`%s -h` lists its flags)", err, invocation(cmd))}
	})
	// The top level keeps its one-line-per-command list; commands get
	// cobra's help (usage line, flags with their defaults).
	commandHelp := root.HelpFunc()
	root.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		if cmd == root {
			usage(root, cmd.OutOrStdout())
			return
		}
		commandHelp(cmd, args)
	})
	for _, l := range topLevel {
		root.AddCommand(l.command(stdout, stderr))
	}
	for _, g := range groups {
		root.AddCommand(g.command(stdout, stderr))
	}
	return root
}

func (l leaf) command(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: l.name, Short: l.summary}
	act := l.declare(cmd.Flags())
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		if l.noArgs != "" {
			return usageError{l.noArgs}
		}
		return usageError{fmt.Sprintf("unexpected argument %q (this command takes flags only)", args[0])}
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return act(cmd.Context(), stdout, stderr) }
	return cmd
}

func (g group) command(stdout, stderr io.Writer) *cobra.Command {
	names := make([]string, len(g.subs))
	for i, s := range g.subs {
		names[i] = s.name
	}
	choice := oneOf(names)
	cmd := &cobra.Command{
		Use:   g.name,
		Short: g.summary,
		// Without this, cobra answers an unknown subcommand with the
		// group's help and exit 0; a typo must fail (exit 2).
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Sprintf("%s %q: use %s", g.name, args[0], choice)}
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			return usageError{fmt.Sprintf("%s needs a subcommand: %s (`go run . %s -h` describes them)", g.name, choice, g.name)}
		},
	}
	for _, s := range g.subs {
		cmd.AddCommand(s.command(stdout, stderr))
	}
	return cmd
}

// invocation is how cmd is run from a checkout, e.g. "go run . sim up".
func invocation(cmd *cobra.Command) string {
	return strings.TrimSpace("go run ." + strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()))
}

// oneOf is "a, b or c".
func oneOf(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// unknownCommand is the top level's argument check: an argument there is
// a command cobra did not find.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q; run `go run . help` for the list", args[0])
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += " (did you mean " + strings.Join(s, " or ") + "?)"
	}
	return usageError{msg}
}

// usage is the top-level help: every command with its summary.
func usage(root *cobra.Command, w io.Writer) {
	fmt.Fprintln(w, "usage: go run . <command> [flags]   (built: darktower <command> [flags])\n\ncommands:")
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() {
			fmt.Fprintf(w, "  %-16s %s\n", c.Name(), c.Short)
		}
	}
	fmt.Fprintln(w, "\n`go run . <command> -h` describes a command and its flags (--name value or --name=value).")
}

// singleDashCompat rewrites -name to --name where name is a long flag of
// the command args select: Go's flag package, which the CLI used before,
// accepted both, and scripts may still pass -name. Anything else (values,
// -h, unknown flags) is left for cobra to judge.
func singleDashCompat(root *cobra.Command, args []string) []string {
	cmd, _, err := root.Find(args)
	if err != nil {
		return args
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		if len(a) < 3 || a[0] != '-' || a[1] == '-' {
			continue
		}
		name, _, _ := strings.Cut(a[1:], "=")
		// help: cobra adds its flag after this runs; -help was Go's too.
		if len(name) > 1 && (name == "help" || cmd.Flags().Lookup(name) != nil) {
			out[i] = "-" + a
		}
	}
	return out
}

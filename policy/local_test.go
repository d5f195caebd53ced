package policy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

func TestKindConfigDecodesStrictlyWithTheMediaPool(t *testing.T) {
	raw, err := os.ReadFile("../infra/local/kind-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		t.Fatalf("kind-config.yaml is not a kind v1alpha4 Cluster: %v", err)
	}
	if c.Kind != "Cluster" || c.APIVersion != "kind.x-k8s.io/v1alpha4" || c.Name != "dark-tower" {
		t.Fatalf("kind %s %s name %s", c.APIVersion, c.Kind, c.Name)
	}
	media := 0
	for _, n := range c.Nodes {
		if n.Labels[NodePoolLabel] == ResourceSizing["media-handler"].DedicatedNodePool {
			media++
			if len(n.KubeadmConfigPatches) == 0 || !strings.Contains(n.KubeadmConfigPatches[0], "effect: NoSchedule") {
				t.Error("the media node is not tainted like the cloud's media pool")
			}
		}
		if n.Image == "" || !strings.Contains(n.Image, ":v") {
			t.Errorf("node image %q is not pinned", n.Image)
		}
	}
	if media != 1 {
		t.Errorf("%d media nodes, want 1", media)
	}
}

func TestComposeFileLoadsWithTheComposeSpec(t *testing.T) {
	env := []string{"DARKTOWER_TAG=dev"}
	for _, k := range []string{"AC_DB_PASSWORD", "GC_DB_PASSWORD", "REDIS_PASSWORD", "AC_MASTER_KEY", "AC_CLIENTS_JSON",
		"MC_CLIENT_SECRET", "MH_CLIENT_SECRET", "TLS_CA_PEM", "AC_TLS_CERT", "AC_TLS_KEY", "GC_TLS_CERT", "GC_TLS_KEY",
		"MC_TLS_CERT", "MC_TLS_KEY", "MH_TLS_CERT", "MH_TLS_KEY"} {
		env = append(env, k+"=x")
	}
	opts, err := cli.NewProjectOptions([]string{"../infra/local/docker-compose.yml"}, cli.WithEnv(env), cli.WithName("dark-tower"))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	for _, svc := range Services {
		s, ok := project.Services[svc]
		if !ok {
			t.Errorf("no service %s", svc)
			continue
		}
		if s.Image != svc+":dev" {
			t.Errorf("%s runs %s, want the build-all --load tag %s:dev", svc, s.Image, svc)
		}
	}
	// A secret left out of .env stops compose with the way to make one.
	opts, _ = cli.NewProjectOptions([]string{"../infra/local/docker-compose.yml"}, cli.WithEnv([]string{"DARKTOWER_TAG=dev"}), cli.WithName("dark-tower"))
	if _, err := opts.LoadProject(context.Background()); err == nil || !strings.Contains(err.Error(), "dev-secrets --format env") {
		t.Errorf("missing secrets: err = %v", err)
	}
}

// The local scripts pass shellcheck (Debian's package; the README's test
// command installs it) and are strict.
func TestLocalScriptsPassShellcheck(t *testing.T) {
	bin, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatal("shellcheck not found: install Debian's shellcheck package (the README's test command does)")
	}
	scripts, _ := filepath.Glob("../infra/local/*.sh")
	if len(scripts) < 5 {
		t.Fatalf("found %v", scripts)
	}
	cmd := exec.Command(bin, append([]string{"-x", "--severity=style"}, scripts...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
	for _, s := range scripts {
		body, _ := os.ReadFile(s)
		if filepath.Base(s) != "lib.sh" && !strings.Contains(string(body), "set -euo pipefail") {
			t.Errorf("%s is not strict (set -euo pipefail)", s)
		}
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s: %s", s, out)
		}
	}
}

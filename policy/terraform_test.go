package policy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

const terraformDir = "../infra/terraform"

// tfDir is one Terraform directory, parsed with hashicorp/hcl/v2 (the
// providers cannot be downloaded here, so `terraform validate` cannot run).
type tfDir struct {
	variables map[string]bool // name → required (no default)
	outputs   map[string]bool
	modules   map[string]*hclsyntax.Block
	locals    map[string]hclsyntax.Expression
}

func parseTF(t *testing.T, dir string) *tfDir {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.tf"))
	if len(files) == 0 {
		t.Fatalf("%s: no .tf files", dir)
	}
	d := &tfDir{variables: map[string]bool{}, outputs: map[string]bool{}, modules: map[string]*hclsyntax.Block{}, locals: map[string]hclsyntax.Expression{}}
	p := hclparse.NewParser()
	for _, f := range files {
		file, diags := p.ParseHCLFile(f)
		if diags.HasErrors() {
			t.Fatalf("%s: %s", f, diags.Error())
		}
		for _, b := range file.Body.(*hclsyntax.Body).Blocks {
			switch b.Type {
			case "variable":
				_, hasDefault := b.Body.Attributes["default"]
				d.variables[b.Labels[0]] = !hasDefault
				if b.Body.Attributes["description"] == nil {
					t.Errorf("%s: variable %s has no description", f, b.Labels[0])
				}
			case "output":
				d.outputs[b.Labels[0]] = true
			case "module":
				d.modules[b.Labels[0]] = b
			case "locals":
				for name, a := range b.Body.Attributes {
					d.locals[name] = a.Expr
				}
			}
		}
	}
	return d
}

var moduleMetaArgs = []string{"source", "version", "providers", "count", "for_each", "depends_on"}

func literal(t *testing.T, e hclsyntax.Expression) cty.Value {
	t.Helper()
	v, diags := e.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("%v: not a literal: %s", e.Range(), diags.Error())
	}
	return v
}

func TestTerraformEnvironmentsWireEveryModuleVariable(t *testing.T) {
	modules := map[string]*tfDir{}
	for _, m := range []string{"kubernetes-cluster", "node-pool", "secrets-backend"} {
		d := parseTF(t, filepath.Join(terraformDir, "modules", m))
		if len(d.variables) == 0 || len(d.outputs) == 0 {
			t.Errorf("module %s: an interface needs variables and outputs", m)
		}
		if !d.variables["cloud"] {
			t.Errorf("module %s: no required cloud variable (the cloud-agnostic switch)", m)
		}
		modules[m] = d
	}
	for _, env := range []string{"dev", "staging", "prod"} {
		d := parseTF(t, filepath.Join(terraformDir, "environments", env))
		if len(d.modules) < 4 {
			t.Errorf("%s wires %d modules, want cluster, two node pools and secrets", env, len(d.modules))
		}
		for name, b := range d.modules {
			src := literal(t, b.Body.Attributes["source"].Expr).AsString()
			mod, ok := modules[filepath.Base(src)]
			if !ok {
				t.Errorf("%s: module %s sources %s, not one of the modules", env, name, src)
				continue
			}
			for arg := range b.Body.Attributes {
				if _, known := mod.variables[arg]; !known && !slices.Contains(moduleMetaArgs, arg) {
					t.Errorf("%s: module %s passes %s, which %s does not declare", env, name, arg, src)
				}
			}
			for v, required := range mod.variables {
				if _, given := b.Body.Attributes[v]; required && !given {
					t.Errorf("%s: module %s does not pass required variable %s", env, name, v)
				}
			}
			// module.X.Y references name real outputs.
			for _, a := range b.Body.Attributes {
				for _, tr := range a.Expr.Variables() {
					if tr.RootName() != "module" || len(tr) < 3 {
						continue
					}
					other := tr[1].(hcl.TraverseAttr).Name
					out := tr[2].(hcl.TraverseAttr).Name
					ob, ok := d.modules[other]
					if !ok {
						t.Errorf("%s: module.%s does not exist", env, other)
						continue
					}
					osrc := filepath.Base(literal(t, ob.Body.Attributes["source"].Expr).AsString())
					if !modules[osrc].outputs[out] {
						t.Errorf("%s: module.%s.%s: %s has no output %s", env, other, out, osrc, out)
					}
				}
			}
		}
		checkNodePools(t, env, d)
		checkSecretNames(t, env, d)
	}
}

// checkNodePools: a general pool that holds the biggest of AC, GC, MC,
// and a dedicated media pool that holds MH (ADR-0012 resource table).
func checkNodePools(t *testing.T, env string, d *tfDir) {
	pools := map[string]*hclsyntax.Block{}
	for _, b := range d.modules {
		if strings.HasSuffix(literal(t, b.Body.Attributes["source"].Expr).AsString(), "node-pool") {
			pools[literal(t, b.Body.Attributes["name"].Expr).AsString()] = b
		}
	}
	for pool, services := range map[string][]string{"general": {"ac-service", "global-controller", "meeting-controller"}, "media": {"media-handler"}} {
		b, ok := pools[pool]
		if !ok {
			t.Errorf("%s: no %s node pool", env, pool)
			continue
		}
		vcpu, _ := literal(t, b.Body.Attributes["node_vcpu"].Expr).AsBigFloat().Float64()
		mem, _ := literal(t, b.Body.Attributes["node_memory_gib"].Expr).AsBigFloat().Float64()
		for _, svc := range services {
			s := ResourceSizing[svc]
			cpu := resource.MustParse(s.CPULimit)
			gib := resource.MustParse(s.MemLimit)
			if float64(cpu.MilliValue())/1000 >= vcpu || float64(gib.Value())/(1<<30) >= mem {
				t.Errorf("%s: %s pool nodes (%v vCPU, %v GiB) cannot hold %s at its limits (%s, %s) plus the node's own daemons", env, pool, vcpu, mem, svc, s.CPULimit, s.MemLimit)
			}
		}
		dedicated := false
		if a, ok := b.Body.Attributes["dedicated"]; ok {
			dedicated = literal(t, a.Expr).True()
		}
		if want := ResourceSizing[services[0]].DedicatedNodePool != ""; dedicated != want {
			t.Errorf("%s: %s pool dedicated=%v, want %v", env, pool, dedicated, want)
		}
	}
	src, _ := os.ReadFile(filepath.Join(terraformDir, "modules", "node-pool", "aws.tf"))
	if !strings.Contains(string(src), `"`+NodePoolLabel+`"`) {
		t.Errorf("node-pool does not label nodes %s (the manifests select on it)", NodePoolLabel)
	}
}

// checkSecretNames: the backend holds exactly the remote keys infra/'s
// ExternalSecrets read.
func checkSecretNames(t *testing.T, env string, d *tfDir) {
	var got []string
	for _, v := range literal(t, d.locals["secret_names"]).AsValueSlice() {
		got = append(got, v.AsString())
	}
	var want []string
	seen := map[string]bool{}
	for _, dir := range []string{"overlays/prod", "platform/database", "platform/observability", FlagsComponent} {
		for _, o := range decoded(t, dir).Structural {
			if o.Kind != "ExternalSecret" {
				continue
			}
			var es struct {
				Spec struct {
					Data []struct {
						RemoteRef struct{ Key string } `json:"remoteRef"`
					}
				}
			}
			if err := yaml.Unmarshal(o.YAML, &es); err != nil {
				t.Fatal(err)
			}
			for _, d := range es.Spec.Data {
				if !seen[d.RemoteRef.Key] {
					seen[d.RemoteRef.Key] = true
					want = append(want, d.RemoteRef.Key)
				}
			}
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		extra, missing := Diff(got, want)
		t.Errorf("%s: secret_names differ from the ExternalSecrets' keys: extra %v, missing %v", env, extra, missing)
	}
}

func TestTerraformIsFormatted(t *testing.T) {
	bin, err := exec.LookPath("terraform")
	if err != nil {
		t.Fatal("terraform not found on PATH: this repository's machines have it; install it to run this check")
	}
	out, err := exec.Command(bin, "fmt", "-check", "-recursive", "-diff", terraformDir).Output()
	if err != nil {
		t.Fatalf("terraform fmt -check: %v\n%s", err, out)
	}
}

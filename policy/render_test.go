package policy

import (
	"path/filepath"
	"testing"
)

const infraDir = "../infra"

// renderAll renders every kustomization under infra/ once per test binary.
var rendered = map[string][]Object{}

func render(t *testing.T, dir string) []Object {
	t.Helper()
	if objs, ok := rendered[dir]; ok {
		return objs
	}
	objs, err := Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	rendered[dir] = objs
	return objs
}

func TestEveryKustomizationRendersAndDecodesStrictly(t *testing.T) {
	dirs, err := Kustomizations(infraDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 10 {
		t.Fatalf("found only %d kustomizations under %s: %v", len(dirs), infraDir, dirs)
	}
	for _, dir := range dirs {
		rel, _ := filepath.Rel(infraDir, dir)
		t.Run(rel, func(t *testing.T) {
			objs := render(t, dir)
			if len(objs) == 0 {
				t.Fatal("renders to nothing")
			}
			if _, _, err := DecodeAll(objs); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	o := Object{APIVersion: "apps/v1", Kind: "Deployment", Name: "x",
		YAML: []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: 1\n  replica: 2\n")}
	if _, _, err := Typed(o); err == nil {
		t.Fatal("a misspelt field decoded without error")
	}
}

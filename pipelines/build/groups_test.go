package build

import (
	"testing"

	"github.com/darktower/delivery/pipelines/catalog"
)

func TestCompileGroupsOneGoBuildPerModuleAndPlatform(t *testing.T) {
	amd, arm := catalog.Platform{OS: "linux", Arch: "amd64"}, catalog.Platform{OS: "linux", Arch: "arm64"}
	specs := []*catalog.Spec{
		{Name: "a", Module: "svc", Main: "./cmd/a", Platforms: []catalog.Platform{amd, arm}},
		{Name: "b", Module: "svc", Main: "./cmd/b", Platforms: []catalog.Platform{amd}},
		{Name: "a2", Module: "svc", Main: "./cmd/a", Platforms: []catalog.Platform{amd}},        // same main: same binary
		{Name: "other-a", Module: "svc", Main: "./tools/a", Platforms: []catalog.Platform{amd}}, // same base name: own go build
		{Name: "c", Module: "other", Main: "./cmd/c", Platforms: []catalog.Platform{amd}},
	}
	o := Options{Specs: specs}
	gs := o.groups("/w")
	type summary struct {
		module, platform string
		mains            int
		specs            int
	}
	var got []summary
	for _, g := range gs {
		got = append(got, summary{g.module, g.p.String(), len(g.mains), len(g.specs)})
	}
	want := []summary{
		{"svc", "linux/amd64", 2, 3}, // ./cmd/a (a, a2), ./cmd/b
		{"svc", "linux/arm64", 1, 1},
		{"svc", "linux/amd64", 1, 1}, // ./tools/a
		{"other", "linux/amd64", 1, 1},
	}
	if len(got) != len(want) {
		t.Fatalf("groups %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("group %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

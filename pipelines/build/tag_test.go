package build

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

func TestTagForGivesValidOCITags(t *testing.T) {
	for version, want := range map[string]string{
		"1.2.3":                  "1.2.3",
		"v1.2.3-rc.1":            "v1.2.3-rc.1",
		"0.0.0-dev+8c9583907d93": "0.0.0-dev-8c9583907d93",
		"-weird/version":         "weird-version",
		"":                       "latest",
		strings.Repeat("a", 200): strings.Repeat("a", 128),
	} {
		got := TagFor(version)
		if got != want {
			t.Errorf("TagFor(%q) = %q, want %q", version, got, want)
		}
		if _, err := name.NewTag("example.com/x:"+got, name.StrictValidation); err != nil {
			t.Errorf("TagFor(%q) = %q is not a valid tag: %v", version, got, err)
		}
	}
}

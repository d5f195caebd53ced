// Package overlay edits the image pins of an infra/ overlay: the one edit
// deployment and promotion make to a kustomization. It rewrites only the
// `images:` entries' newName and digest, keeping every comment and the
// rest of the file as it is.
package overlay

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ImagePrefix is how the base manifests name the services' images.
const ImagePrefix = "ghcr.io/darktower/"

// Pin is where one service's image now comes from.
type Pin struct {
	NewName string // repository, e.g. localhost:5001/darktower/ac-service
	Digest  string // sha256:...
}

// Pins are the pins of images pushed under prefix (<prefix>/<service>),
// from each service's digest.
func Pins(prefix string, digests map[string]string) map[string]Pin {
	pins := map[string]Pin{}
	for svc, d := range digests {
		pins[svc] = Pin{NewName: strings.TrimSuffix(prefix, "/") + "/" + svc, Digest: d}
	}
	return pins
}

// PinImages sets the images of path (a kustomization.yaml) to pins, keyed
// by service. Every pinned service must have an entry and every entry a
// pin; nothing is written otherwise.
func PinImages(path string, pins map[string]Pin) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return fmt.Errorf("%s: not a kustomization", path)
	}
	images := field(doc.Content[0], "images")
	if images == nil || images.Kind != yaml.SequenceNode {
		return fmt.Errorf("%s: no images: list to pin", path)
	}
	seen := map[string]bool{}
	for _, entry := range images.Content {
		name := field(entry, "name")
		if name == nil || !strings.HasPrefix(name.Value, ImagePrefix) {
			continue
		}
		svc := strings.TrimPrefix(name.Value, ImagePrefix)
		pin, ok := pins[svc]
		if !ok {
			return fmt.Errorf("%s: no new image for %s (the manifest does not have it)", path, svc)
		}
		if !strings.HasPrefix(pin.Digest, "sha256:") || len(pin.Digest) != len("sha256:")+64 {
			return fmt.Errorf("%s: %q is not a sha256 digest", svc, pin.Digest)
		}
		set(entry, "newName", pin.NewName)
		set(entry, "digest", pin.Digest)
		seen[svc] = true
	}
	var missing []string
	for svc := range pins {
		if !seen[svc] {
			missing = append(missing, svc)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%s: no images: entry for %s", path, strings.Join(missing, ", "))
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func field(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func set(m *yaml.Node, key, value string) {
	if v := field(m, key); v != nil {
		v.Value, v.Tag, v.Style = value, "!!str", 0
		return
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &yaml.Node{Kind: yaml.ScalarNode, Value: value})
}

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

// Edit is one kustomization's pins rewritten.
type Edit struct {
	Path          string
	Before, After []byte
	Services      []string // the services it pins, sorted
}

// Changed reports whether the edit changes the file.
func (e Edit) Changed() bool { return !bytes.Equal(e.Before, e.After) }

// PinImages sets the images of the kustomizations at paths to pins, keyed
// by service: every entry must have a pin, and every pin an entry in at
// least one of them (a release's image that no kustomization deploys is
// refused, not silently dropped). Nothing is written unless all of them
// can be pinned.
func PinImages(paths []string, pins map[string]Pin) ([]Edit, error) {
	edits, err := PlanPins(paths, pins)
	if err != nil {
		return nil, err
	}
	// Every new file is written before any replaces its original, so a
	// failed write leaves all of them as they were.
	var written []string
	defer func() {
		for _, tmp := range written {
			os.Remove(tmp) // those not renamed
		}
	}()
	for _, e := range edits {
		if !e.Changed() {
			continue
		}
		tmp := e.Path + ".tmp"
		written = append(written, tmp)
		if err := os.WriteFile(tmp, e.After, 0o644); err != nil {
			return nil, err
		}
	}
	for _, e := range edits {
		if e.Changed() {
			if err := os.Rename(e.Path+".tmp", e.Path); err != nil {
				return nil, err
			}
		}
	}
	return edits, nil
}

// PlanPins is PinImages without writing: the edits it would make.
func PlanPins(paths []string, pins map[string]Pin) ([]Edit, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("no kustomization to pin")
	}
	var edits []Edit
	covered := map[string]bool{}
	for _, path := range paths {
		e, err := planPins(path, pins)
		if err != nil {
			return nil, err
		}
		for _, svc := range e.Services {
			covered[svc] = true
		}
		edits = append(edits, e)
	}
	var missing []string
	for svc := range pins {
		if !covered[svc] {
			missing = append(missing, svc)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("no images: entry for %s in %s", strings.Join(missing, ", "), strings.Join(paths, " or "))
	}
	return edits, nil
}

func planPins(path string, pins map[string]Pin) (Edit, error) {
	e := Edit{Path: path}
	raw, err := os.ReadFile(path)
	if err != nil {
		return e, err
	}
	e.Before = raw
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return e, fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return e, fmt.Errorf("%s: not a kustomization", path)
	}
	images := field(doc.Content[0], "images")
	if images == nil || images.Kind != yaml.SequenceNode {
		return e, fmt.Errorf("%s: no images: list to pin", path)
	}
	for _, entry := range images.Content {
		name := field(entry, "name")
		if name == nil || !strings.HasPrefix(name.Value, ImagePrefix) {
			continue
		}
		svc := strings.TrimPrefix(name.Value, ImagePrefix)
		pin, ok := pins[svc]
		if !ok {
			return e, fmt.Errorf("%s: no new image for %s (the manifest does not have it)", path, svc)
		}
		if !strings.HasPrefix(pin.Digest, "sha256:") || len(pin.Digest) != len("sha256:")+64 {
			return e, fmt.Errorf("%s: %q is not a sha256 digest", svc, pin.Digest)
		}
		set(entry, "newName", pin.NewName)
		set(entry, "digest", pin.Digest)
		e.Services = append(e.Services, svc)
	}
	sort.Strings(e.Services)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return e, err
	}
	e.After = out.Bytes()
	return e, nil
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

package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/e-mission/upc/internal/atomicfile"

	"github.com/e-mission/upc/conf"
)

// Manifest records the images of one build (build/images.json), so the
// catalog can pin each service's image by ID.
type Manifest struct {
	Version string           `json:"version"`
	Images  map[string]Image `json:"images"`
}

// Image is one built image.
type Image struct {
	// Ref is the tag, "upc/<name>:<version>".
	Ref string `json:"ref"`
	// ID is the image ID, "sha256:<hex>": the digest of its configuration.
	ID string `json:"id"`
}

// Validate reports every problem in the manifest at once.
func (m *Manifest) Validate() error {
	var errs []error
	if m.Version == "" {
		errs = append(errs, errors.New("version: required"))
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range m.Images {
			if !yield(k) {
				return
			}
		}
	}) {
		im := m.Images[name]
		if !nameRE.MatchString(name) {
			errs = append(errs, fmt.Errorf("images[%q]: not a service name", name))
		}
		if im.Ref == "" {
			errs = append(errs, fmt.Errorf("images[%q].ref: required", name))
		}
		if !strings.HasPrefix(im.ID, "sha256:") || len(im.ID) != len("sha256:")+64 {
			errs = append(errs, fmt.Errorf("images[%q].id: %q is not sha256:<64 hex>", name, im.ID))
		}
	}
	return errors.Join(errs...)
}

// LoadManifest reads and validates a manifest, strictly.
func LoadManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read image manifest: %w", err)
	}
	var m Manifest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("image manifest %s: %w", path, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("image manifest %s: %w", path, err)
	}
	return &m, nil
}

// Save writes the manifest atomically (temporary file, then rename), so a
// reader never sees half a file.
func (m *Manifest) Save(path string) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("save image manifest: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("save image manifest: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("save image manifest: %w", err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save image manifest: %w", err)
	}
	return nil
}

// Digests maps each image's name to its ID: what a client requires of the
// instances it launches (client.RequireDigests).
func (m *Manifest) Digests() map[string]string {
	out := make(map[string]string, len(m.Images))
	for name, im := range m.Images {
		out[name] = im.ID
	}
	return out
}

// Pin sets Image and Digest of every catalog entry the manifest has an image
// for, so launches run exactly the built image. It returns the names of the
// entries it left alone (a deployment's own services built elsewhere).
func (m *Manifest) Pin(cat *conf.Catalog) (unpinned []string) {
	for i := range cat.Services {
		s := &cat.Services[i]
		im, ok := m.Images[s.Name]
		if !ok {
			unpinned = append(unpinned, s.Name)
			continue
		}
		s.Image = im.Ref
		s.Digest = im.ID
	}
	return unpinned
}

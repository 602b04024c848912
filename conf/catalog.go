package conf

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Catalog lists the services a router may launch for a user. It is data, not
// code (the original's docker_services.json / kubernetes_services.json): a
// deployment adds a service by adding an entry. Both backends render it.
type Catalog struct {
	Services []Service `json:"services"`
}

// Service is one launchable per-user service.
type Service struct {
	// Name is the canonical lowercase name: "pm", "pipeline", "metrics", "count".
	Name string `json:"name"`
	// Aliases are other names clients may use, e.g. the original "PM", "Pipeline".
	Aliases []string `json:"aliases,omitempty"`
	// Image is the image reference without digest, e.g. "upc/pm:v0.1.0".
	Image string `json:"image"`
	// Digest pins the image ("sha256:..."); filled from build/images.json when empty.
	Digest string `json:"digest,omitempty"`
	// Port is the port the service listens on inside its container or pod.
	Port int `json:"port"`
	// Health is the HTTP path that answers 200 once the instance is ready.
	Health string `json:"health,omitempty"`
	// Env is passed to the instance as environment variables.
	Env map[string]string `json:"env,omitempty"`
	// Resources bound what one instance may use.
	Resources Resources `json:"resources,omitempty"`
	// Volumes are mounted into the instance; per-user volumes outlive it.
	Volumes []Volume `json:"volumes,omitempty"`
	// Idle is when the router pauses and deletes an instance nobody uses.
	Idle Idle `json:"idle,omitzero"`
}

// Idle is a service's idle policy: the router pauses an instance that has
// served no authenticated request for PauseAfter, and deletes one idle for
// DeleteAfter (its per-user volumes stay). Zero is never. A paused
// instance's idle time runs on from when it was paused.
type Idle struct {
	PauseAfter  Duration `json:"pause_after,omitempty"`
	DeleteAfter Duration `json:"delete_after,omitempty"`
}

// Enabled reports whether the policy pauses or deletes anything.
func (i Idle) Enabled() bool { return i.PauseAfter > 0 || i.DeleteAfter > 0 }

// Resources bound one instance. Zero means unbounded.
type Resources struct {
	CPUMillis int `json:"cpu_millis,omitempty"`
	MemoryMB  int `json:"memory_mb,omitempty"`
}

// Volume is storage mounted into an instance.
type Volume struct {
	Name string `json:"name"`
	Path string `json:"path"`
	// PerUser volumes are named for the user and kept across pause, resume
	// and delete of the instance, so data outlives containers and pods.
	PerUser bool `json:"per_user,omitempty"`
	// SizeMB is the requested size where the backend needs one (Kubernetes claims).
	SizeMB int `json:"size_mb,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// Lookup finds a service by name or alias, ignoring case.
func (c *Catalog) Lookup(name string) (Service, bool) {
	for _, s := range c.Services {
		if strings.EqualFold(s.Name, name) {
			return s, true
		}
		for _, a := range s.Aliases {
			if strings.EqualFold(a, name) {
				return s, true
			}
		}
	}
	return Service{}, false
}

// Unpinned names the services whose image no digest pins: they run
// whatever their reference names on the machine when launched, unchecked.
func (c *Catalog) Unpinned() []string {
	var out []string
	for _, s := range c.Services {
		if s.Digest == "" {
			out = append(out, s.Name)
		}
	}
	return out
}

// Names lists the canonical service names in catalog order.
func (c *Catalog) Names() []string {
	out := make([]string, len(c.Services))
	for i, s := range c.Services {
		out[i] = s.Name
	}
	return out
}

// Validate reports every problem in the catalog at once.
func (c *Catalog) Validate() error {
	var errs []error
	if len(c.Services) == 0 {
		errs = append(errs, errors.New("services: the catalog lists no service"))
	}
	seen := map[string]string{}
	for i, s := range c.Services {
		at := fmt.Sprintf("services[%d]", i)
		if !nameRE.MatchString(s.Name) {
			errs = append(errs, fmt.Errorf("%s.name: %q must be lowercase letters, digits and dashes, starting with a letter", at, s.Name))
		}
		for _, n := range append([]string{s.Name}, s.Aliases...) {
			k := strings.ToLower(n)
			if k == "" {
				errs = append(errs, fmt.Errorf("%s.aliases: empty alias", at))
				continue
			}
			if prev, dup := seen[k]; dup && prev != at {
				errs = append(errs, fmt.Errorf("%s: name or alias %q is already used by %s", at, n, prev))
			}
			seen[k] = at
		}
		if s.Image == "" {
			errs = append(errs, fmt.Errorf("%s.image: required", at))
		}
		if s.Digest != "" && !strings.HasPrefix(s.Digest, "sha256:") {
			errs = append(errs, fmt.Errorf("%s.digest: %q must start with sha256:", at, s.Digest))
		}
		if s.Port < 1 || s.Port > 65535 {
			errs = append(errs, fmt.Errorf("%s.port: %d is not a port (1-65535)", at, s.Port))
		}
		if s.Health != "" && !strings.HasPrefix(s.Health, "/") {
			errs = append(errs, fmt.Errorf("%s.health: %q must be a path starting with /", at, s.Health))
		}
		if s.Resources.CPUMillis < 0 || s.Resources.MemoryMB < 0 {
			errs = append(errs, fmt.Errorf("%s.resources: negative limits", at))
		}
		if s.Idle.PauseAfter < 0 {
			errs = append(errs, fmt.Errorf("%s.idle.pause_after: %s is negative", at, s.Idle.PauseAfter.D()))
		}
		if s.Idle.DeleteAfter < 0 {
			errs = append(errs, fmt.Errorf("%s.idle.delete_after: %s is negative", at, s.Idle.DeleteAfter.D()))
		}
		if s.Idle.PauseAfter > 0 && s.Idle.DeleteAfter > 0 && s.Idle.DeleteAfter <= s.Idle.PauseAfter {
			errs = append(errs, fmt.Errorf("%s.idle.delete_after: %s must be longer than pause_after (%s), or 0 (never)", at, s.Idle.DeleteAfter.D(), s.Idle.PauseAfter.D()))
		}
		for j, v := range s.Volumes {
			vat := fmt.Sprintf("%s.volumes[%d]", at, j)
			if !nameRE.MatchString(v.Name) {
				errs = append(errs, fmt.Errorf("%s.name: %q must be lowercase letters, digits and dashes", vat, v.Name))
			}
			if !strings.HasPrefix(v.Path, "/") {
				errs = append(errs, fmt.Errorf("%s.path: %q must be absolute", vat, v.Path))
			}
			if v.SizeMB < 0 {
				errs = append(errs, fmt.Errorf("%s.size_mb: %d is negative", vat, v.SizeMB))
			}
		}
	}
	return errors.Join(errs...)
}

// LoadCatalog reads a catalog file strictly (unknown fields are errors) and
// validates it as it is: with no configuration, no defaults are applied, so
// every entry must name its port. A component that runs a catalog loads it
// through its Config (Config.LoadCatalog, Config.LoadCatalogFile).
func LoadCatalog(path string) (*Catalog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	var c Catalog
	if err := decodeStrict(b, &c); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	return &c, nil
}

//go:embed catalog.json
var builtinCatalog []byte

// DefaultCatalog returns the built-in catalog (conf/catalog.json).
func DefaultCatalog() (*Catalog, error) {
	return ParseCatalog(builtinCatalog)
}

// ParseCatalog decodes a catalog strictly and validates it.
func ParseCatalog(b []byte) (*Catalog, error) {
	var cat Catalog
	if err := decodeStrict(b, &cat); err != nil {
		return nil, err
	}
	if err := cat.Validate(); err != nil {
		return nil, err
	}
	return &cat, nil
}

// LoadCatalog returns the catalog the config names (or the built-in one).
// Entries that name no port listen on upc_port.
func (c *Config) LoadCatalog() (*Catalog, error) {
	if c.Catalog == "" {
		return c.parseCatalog(builtinCatalog, "(built-in)")
	}
	return c.LoadCatalogFile(c.Path(c.Catalog))
}

// LoadCatalogFile returns the catalog in the file at path, taken as given
// (a command's flag, not relative to the config file), with the config's
// defaults: the catalog LoadCatalog gives when the config names that file.
func (c *Config) LoadCatalogFile(path string) (*Catalog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	return c.parseCatalog(b, path)
}

// parseCatalog decodes a catalog strictly, gives entries that name no port
// upc_port, and validates it; name says where it came from in errors.
func (c *Config) parseCatalog(b []byte, name string) (*Catalog, error) {
	var cat Catalog
	if err := decodeStrict(b, &cat); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", name, err)
	}
	cat.SetDefaults(c.UPCPort)
	if err := cat.Validate(); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", name, err)
	}
	return &cat, nil
}

// SetDefaults gives entries that name no port the given one (upc_port).
func (cat *Catalog) SetDefaults(port int) {
	for i := range cat.Services {
		if cat.Services[i].Port == 0 {
			cat.Services[i].Port = port
		}
	}
}

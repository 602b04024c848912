package conf

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Parse decodes a configuration (JSON or YAML) strictly, sets defaults and
// validates it. Top-level keys starting with "_" are comments.
func Parse(b []byte) (*Config, error) {
	var c Config
	if err := decodeConfig(b, &c); err != nil {
		return nil, err
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Load reads the configuration at path (JSON or YAML).
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if dir, err := filepath.Abs(filepath.Dir(path)); err == nil {
		c.dir = dir
	}
	return c, nil
}

// decodeConfig drops the top-level comment keys, then decodes strictly.
func decodeConfig(b []byte, c *Config) error {
	var raw map[string]json.RawMessage
	if err := decodeLoose(b, &raw); err != nil {
		return err
	}
	if raw == nil {
		return errors.New("parse: the document is not an object")
	}
	for k := range raw {
		if strings.HasPrefix(k, "_") {
			delete(raw, k)
		}
	}
	j, err := json.Marshal(raw)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	return decodeStrict(j, c)
}

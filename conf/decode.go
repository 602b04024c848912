// Package conf is UPC's one typed configuration, shared by every component:
// the deployment (router, machines, mode, TLS) and the service catalog.
// Files are JSON or YAML, decoded strictly: unknown fields and bad values are
// errors that name the field.
package conf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// decodeStrict decodes JSON or YAML (YAML is converted to JSON first) into v,
// rejecting unknown fields and trailing data.
func decodeStrict(b []byte, v any) error {
	j, err := toJSON(b)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("field %q: want %s, got %s", te.Field, te.Type, te.Value)
		}
		return fmt.Errorf("parse: %w", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return errors.New("parse: trailing data after the document")
	}
	return nil
}

// toJSON returns b as JSON: a document that starts like JSON is taken as JSON
// (so trailing data stays visible), anything else is converted from YAML.
func toJSON(b []byte) ([]byte, error) {
	t := bytes.TrimSpace(b)
	if len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		return b, nil
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return j, nil
}

// decodeLoose decodes JSON or YAML without rejecting unknown fields.
func decodeLoose(b []byte, v any) error {
	j, err := toJSON(b)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return errors.New("parse: trailing data after the document")
	}
	return nil
}

package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// ReadEntries reads a JSON array of timeseries entries as e-mission exports
// them (Mongo extended JSON: {"$oid": ...}, {"$uuid": ...}). Data of the
// streams the pipeline reads is decoded into typed values.
func ReadEntries(r io.Reader) ([]Entry, error) {
	var raw []struct {
		ID       json.RawMessage `json:"_id"`
		UserID   json.RawMessage `json:"user_id"`
		Metadata Metadata        `json:"metadata"`
		Data     json.RawMessage `json:"data"`
	}
	dec := json.NewDecoder(r)
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("read entries: %w", err)
	}
	out := make([]Entry, 0, len(raw))
	var errs []error
	for i, r := range raw {
		e := Entry{ID: extString(r.ID), UserID: extString(r.UserID), Metadata: r.Metadata}
		if e.Metadata.Key == "" {
			errs = append(errs, fmt.Errorf("entry %d: no metadata.key", i))
			continue
		}
		var err error
		switch e.Metadata.Key {
		case KeyLocation, KeyFilteredLocation:
			var l Location
			err = json.Unmarshal(r.Data, &l)
			if l.Filter == "" {
				l.Filter = e.Metadata.Filter
			}
			e.Data = &l
		case KeyMotion:
			var m Motion
			err = json.Unmarshal(r.Data, &m)
			e.Data = &m
		case KeyTransition:
			var t Transition
			err = json.Unmarshal(r.Data, &t)
			e.Data = &t
		default:
			e.Data = json.RawMessage(r.Data)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("entry %d (%s): %w", i, e.Metadata.Key, err))
			continue
		}
		out = append(out, e)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("read entries: %w", joinFirst(errs, 10))
	}
	return out, nil
}

func joinFirst(errs []error, n int) error {
	if len(errs) > n {
		errs = append(errs[:n], fmt.Errorf("and %d more", len(errs)-n))
	}
	return errorsJoin(errs...)
}

// extString unwraps {"$oid": s} / {"$uuid": s} or a plain string.
func extString(b json.RawMessage) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		return s
	}
	var m map[string]any
	if json.Unmarshal(b, &m) == nil {
		for _, k := range []string{"$oid", "$uuid"} {
			if v, ok := m[k].(string); ok {
				return v
			}
		}
		if bin, ok := m["$binary"].(map[string]any); ok {
			if v, ok := bin["base64"].(string); ok {
				return v
			}
		}
	}
	return string(b)
}

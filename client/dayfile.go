// Package client is what a user's device does with its private cloud (the
// original client_scripts/), as a typed API: launch a PM through the router
// and unseal it with the user's key, upload an e-mission day file into it,
// download it back, have the pipeline service turn it into trips, ask the
// count and metrics services (which charge the user's privacy budget), pause,
// resume and delete instances. Every call goes through internal/httpx.
package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/e-mission/upc/internal/realdata"
)

// DefaultType is the metadata.type an entry gets when it has none, as the
// original upload script set it.
const DefaultType = "sensor-data"

// Entry is one e-mission timeseries entry as JSON decodes it.
type Entry = map[string]any

// LoadDay reads a day file: one JSON array of timeseries entries (the files in
// testdata/real_examples), gzipped or not.
func LoadDay(path string) ([]Entry, error) {
	b, err := realdata.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read day file: %w", err)
	}
	entries, err := ParseDay(b)
	if err != nil {
		return nil, fmt.Errorf("day file %s: %w", path, err)
	}
	return entries, nil
}

// ParseDay decodes a day file's JSON array.
func ParseDay(b []byte) ([]Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var entries []Entry
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("want a JSON array of entries: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the array")
	}
	return entries, nil
}

// isMillis is the original's test: a timestamp of 10^11 or more is in
// milliseconds (10^11 seconds is the year 5138).
func isMillis(ts float64) bool { return !(ts < 1e11) }

// Prepare formats one entry for upload exactly as the original
// upload_data.py did: drop _id and metadata.write_local_dt, default
// metadata.type to "sensor-data", tag it with the user's id, and turn
// metadata.write_ts and data.ts from milliseconds into seconds where they are
// in milliseconds. The entry is modified in place and returned. Where the
// original would crash (no metadata, write_ts or key), Prepare returns an
// error naming what is missing.
func Prepare(e Entry, user string) (Entry, error) {
	md, ok := e["metadata"].(map[string]any)
	if !ok {
		return nil, errors.New("metadata: missing or not an object")
	}
	data, ok := e["data"].(map[string]any)
	if !ok {
		return nil, errors.New("data: missing or not an object")
	}
	delete(e, "_id")
	delete(md, "write_local_dt")
	if _, ok := md["type"]; !ok {
		md["type"] = DefaultType
	}
	e["user_id"] = user
	wts, ok := md["write_ts"].(float64)
	if !ok {
		return nil, errors.New("metadata.write_ts: missing or not a number")
	}
	if isMillis(wts) {
		md["write_ts"] = wts / 1000
	}
	if ts, present := data["ts"]; present {
		f, ok := ts.(float64)
		if !ok {
			return nil, errors.New("data.ts: not a number")
		}
		if isMillis(f) {
			data["ts"] = f / 1000
		}
	}
	if _, ok := md["key"].(string); !ok {
		return nil, errors.New("metadata.key: missing or not a string")
	}
	return e, nil
}

// UpsertQuery is the filter the original upserted each entry under: one
// document per (user, metadata.type, metadata.write_ts, metadata.key).
func UpsertQuery(e Entry) map[string]any {
	md := e["metadata"].(map[string]any)
	return map[string]any{
		"user_id":           e["user_id"],
		"metadata.type":     md["type"],
		"metadata.write_ts": md["write_ts"],
		"metadata.key":      md["key"],
	}
}

// Expected is what a download of the user's entries must return after
// uploading prepared: one document per upsert key, each the top-level merge
// of that key's entries in upload order ($set replaces top-level fields and
// keeps others), without user_id (the download's projection drops it), in
// write_ts order.
func Expected(prepared []Entry) []Entry {
	type slot struct {
		doc   Entry
		first int
	}
	byKey := map[string]*slot{}
	for i, e := range prepared {
		k := upsertKey(e)
		s, ok := byKey[k]
		if !ok {
			s = &slot{doc: Entry{}, first: i}
			byKey[k] = s
		}
		for f, v := range e {
			if f != "user_id" {
				s.doc[f] = v
			}
		}
	}
	out := make([]*slot, 0, len(byKey))
	for _, s := range byKey {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		wi, wj := writeTS(out[i].doc), writeTS(out[j].doc)
		if wi != wj {
			return wi < wj
		}
		return out[i].first < out[j].first
	})
	docs := make([]Entry, len(out))
	for i, s := range out {
		docs[i] = s.doc
	}
	return docs
}

func writeTS(e Entry) float64 {
	md, _ := e["metadata"].(map[string]any)
	f, _ := md["write_ts"].(float64)
	return f
}

func upsertKey(e Entry) string {
	md, _ := e["metadata"].(map[string]any)
	b, _ := json.Marshal([]any{md["type"], md["write_ts"], md["key"]})
	return string(b)
}

// Compare checks that got holds exactly the documents of want, whatever the
// order among documents of equal write_ts. It reports up to a few differences.
func Compare(want, got []Entry) error {
	var errs []error
	if len(want) != len(got) {
		errs = append(errs, fmt.Errorf("got %d documents, want %d", len(got), len(want)))
	}
	remaining := map[string][]Entry{}
	for _, g := range got {
		k := upsertKey(g)
		remaining[k] = append(remaining[k], g)
	}
	for _, w := range want {
		if len(errs) >= 5 {
			errs = append(errs, errors.New("... more differences"))
			break
		}
		k := upsertKey(w)
		cands := remaining[k]
		if len(cands) == 0 {
			errs = append(errs, fmt.Errorf("missing document %s", k))
			continue
		}
		g := cands[0]
		remaining[k] = cands[1:]
		if !reflect.DeepEqual(normalize(w), normalize(g)) {
			errs = append(errs, fmt.Errorf("document %s differs: %s", k, firstDiff("", normalize(w), normalize(g))))
		}
	}
	for k, extra := range remaining {
		if len(extra) > 0 && len(errs) < 6 {
			errs = append(errs, fmt.Errorf("unexpected document %s (%d)", k, len(extra)))
		}
	}
	return errors.Join(errs...)
}

// normalize round-trips v through JSON so maps, slices and numbers compare
// the same whichever way they were built.
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return v
	}
	return out
}

// firstDiff names the first path at which want and got differ.
func firstDiff(path string, want, got any) string {
	wm, wok := want.(map[string]any)
	gm, gok := got.(map[string]any)
	if wok && gok {
		keys := map[string]bool{}
		for k := range wm {
			keys[k] = true
		}
		for k := range gm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			if !reflect.DeepEqual(wm[k], gm[k]) {
				return firstDiff(strings.TrimPrefix(path+"."+k, "."), wm[k], gm[k])
			}
		}
	}
	ws, _ := json.Marshal(want)
	gs, _ := json.Marshal(got)
	return fmt.Sprintf("%s: want %.80s, got %.80s", path, ws, gs)
}

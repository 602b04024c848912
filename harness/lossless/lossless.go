// Package lossless checks what the e2e's compare step claims: that a user's
// download holds their day file, entry for entry. The day file is read here,
// by a minimal JSON read of its own, apart from the client's upload code
// (client.LoadDay, Prepare, Expected, Compare), so that a mistake in how the
// client prepares entries shows up as a difference instead of sitting on
// both sides of the comparison. This package imports nothing of UPC's (a
// test checks).
//
// What an upload may change is restated here from the original
// upload_data.py, and nothing else passes:
//   - "_id" is dropped, and so is "user_id" (the upload sets the uploader's,
//     the download's projection leaves it out);
//   - metadata.write_local_dt is dropped, and a missing metadata.type
//     becomes "sensor-data";
//   - metadata.write_ts and data.ts of 10^11 or more are milliseconds and
//     become seconds;
//   - entries with the same (metadata.type, metadata.write_ts, metadata.key)
//     are one document: each upload $sets its top-level fields, so a later
//     entry's field replaces an earlier one's.
//
// The download must hold exactly one such document per key, equal to it
// field for field, and come in metadata.write_ts order.
package lossless

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
)

// ReadDay reads a day file, gzipped when its name ends in .gz: one JSON
// array of entry objects.
func ReadDay(path string) ([]map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read day: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("read day %s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read day %s: %w", path, err)
	}
	var day []map[string]any
	if err := json.Unmarshal(b, &day); err != nil {
		return nil, fmt.Errorf("read day %s: want a JSON array of objects: %w", path, err)
	}
	return day, nil
}

// millis is the original's rule: a time stamp of 10^11 or more is in
// milliseconds (10^11 seconds is the year 5138).
func millis(v any) any {
	if f, ok := v.(float64); ok && f >= 1e11 {
		return f / 1000
	}
	return v
}

// stored is the document the PM holds for entry e after its upload, and the
// key the upload filed it under. e is not modified.
func stored(e map[string]any) (doc map[string]any, key string, err error) {
	md, ok := e["metadata"].(map[string]any)
	if !ok {
		return nil, "", errors.New("metadata: missing or not an object")
	}
	doc = map[string]any{}
	for k, v := range e {
		if k != "_id" && k != "user_id" {
			doc[k] = v
		}
	}
	m := map[string]any{}
	for k, v := range md {
		if k != "write_local_dt" {
			m[k] = v
		}
	}
	if _, ok := m["type"]; !ok {
		m["type"] = "sensor-data"
	}
	m["write_ts"] = millis(m["write_ts"])
	doc["metadata"] = m
	if data, ok := e["data"].(map[string]any); ok {
		if ts, ok := data["ts"]; ok {
			d := map[string]any{}
			for k, v := range data {
				d[k] = v
			}
			d["ts"] = millis(ts)
			doc["data"] = d
		}
	}
	return doc, keyOf(doc), nil
}

// keyOf is a document's upsert key as text.
func keyOf(doc map[string]any) string {
	md, _ := doc["metadata"].(map[string]any)
	b, _ := json.Marshal([]any{md["type"], md["write_ts"], md["key"]})
	return string(b)
}

func writeTS(doc map[string]any) (float64, bool) {
	md, _ := doc["metadata"].(map[string]any)
	f, ok := md["write_ts"].(float64)
	return f, ok
}

// maxDiffs bounds the differences an error lists.
const maxDiffs = 5

// Check compares the documents a download returned with the day's entries
// as ReadDay read them, by the rules above. The error lists the first
// differences and counts the rest.
func Check(day, downloaded []map[string]any) error {
	want := map[string]map[string]any{}
	var order []string
	var errs []string
	for i, e := range day {
		doc, k, err := stored(e)
		if err != nil {
			errs = append(errs, fmt.Sprintf("day entry %d: %v", i, err))
			continue
		}
		w, seen := want[k]
		if !seen {
			w = map[string]any{}
			want[k] = w
			order = append(order, k)
		}
		for f, v := range doc {
			w[f] = v
		}
	}
	got := map[string][]map[string]any{}
	last, sorted := 0.0, true
	for i, d := range downloaded {
		d = normal(d)
		k := keyOf(d)
		got[k] = append(got[k], d)
		ts, ok := writeTS(d)
		if !ok {
			errs = append(errs, fmt.Sprintf("downloaded document %d has no numeric metadata.write_ts", i))
		} else if i > 0 && ts < last && sorted {
			errs = append(errs, fmt.Sprintf("downloaded document %d (write_ts %v) comes after write_ts %v: not in write_ts order", i, ts, last))
			sorted = false
		}
		last = ts
	}
	for _, k := range order {
		g := got[k]
		switch len(g) {
		case 0:
			errs = append(errs, fmt.Sprintf("entry %s is missing from the download", k))
			continue
		case 1:
		default:
			errs = append(errs, fmt.Sprintf("entry %s is in the download %d times", k, len(g)))
		}
		if path, w, gv := diff("", normal(want[k]), g[0]); path != "" {
			errs = append(errs, fmt.Sprintf("entry %s differs at %s: the day file has %s, the download %s", k, path, w, gv))
		}
		delete(got, k)
	}
	extra := make([]string, 0, len(got))
	for k := range got {
		extra = append(extra, k)
	}
	sort.Strings(extra)
	for _, k := range extra {
		errs = append(errs, fmt.Sprintf("the download holds %s, which no day entry has", k))
	}
	if len(errs) == 0 {
		return nil
	}
	n := len(errs)
	if n > maxDiffs {
		errs = append(errs[:maxDiffs], fmt.Sprintf("and %d more", n-maxDiffs))
	}
	return fmt.Errorf("%d differences: %s", n, strings.Join(errs, "; "))
}

// normal is v as JSON would give it back (maps, slices, float64), so values
// compare alike however they were decoded.
func normal(v map[string]any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out map[string]any
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&out); err != nil {
		return v
	}
	return out
}

// diff finds the first path (fields in sorted order) where want and got
// differ, and the two values there as JSON; "" when they are equal.
func diff(path string, want, got any) (string, string, string) {
	if reflect.DeepEqual(want, got) {
		return "", "", ""
	}
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
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			p := strings.TrimPrefix(path+"."+k, ".")
			wv, win := wm[k]
			gv, gin := gm[k]
			if win != gin {
				return p, present(wv, win), present(gv, gin)
			}
			if p, w, g := diff(p, wv, gv); p != "" {
				return p, w, g
			}
		}
	}
	return cmpPath(path), show(want), show(got)
}

func cmpPath(p string) string {
	if p == "" {
		return "the top level"
	}
	return p
}

func present(v any, ok bool) string {
	if !ok {
		return "nothing"
	}
	return show(v)
}

// show is a value as short JSON.
func show(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

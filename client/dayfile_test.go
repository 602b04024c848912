package client

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
)

var days = []string{
	"shankari_2015-aug-27", "shankari_2016-06-20", "shankari_2016-08-10",
	"shankari_2015-08-23", "iphone_3_2016-02-22", "sunil_2016-07-20",
}

func entry(t *testing.T, s string) Entry {
	t.Helper()
	var e Entry
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestPrepare(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{
			name: "milliseconds become seconds",
			in:   `{"_id":{"$oid":"55df34ed7d65cb39ee9865a1"},"user_id":{"$uuid":"0763de"},"data":{"ts":1440688707867},"metadata":{"write_ts":1440688718971,"key":"background/location","type":"message"}}`,
			want: `{"data":{"ts":1440688707.867},"metadata":{"write_ts":1440688718.971,"key":"background/location","type":"message"},"user_id":"u1"}`,
		},
		{
			name: "seconds stay",
			in:   `{"data":{"ts":1440688707.867},"metadata":{"write_ts":1440688718.971,"key":"k","type":"message"}}`,
			want: `{"data":{"ts":1440688707.867},"metadata":{"write_ts":1440688718.971,"key":"k","type":"message"},"user_id":"u1"}`,
		},
		{
			name: "the boundary 10^11 is milliseconds",
			in:   `{"data":{"ts":100000000000},"metadata":{"write_ts":99999999999,"key":"k","type":"t"}}`,
			want: `{"data":{"ts":100000000},"metadata":{"write_ts":99999999999,"key":"k","type":"t"},"user_id":"u1"}`,
		},
		{
			name: "missing type defaults to sensor-data",
			in:   `{"data":{"x":1},"metadata":{"write_ts":1.5,"key":"k"}}`,
			want: `{"data":{"x":1},"metadata":{"write_ts":1.5,"key":"k","type":"sensor-data"},"user_id":"u1"}`,
		},
		{
			name: "write_local_dt dropped, other metadata kept, no data.ts added",
			in:   `{"data":{"enter_ts":1440688707867},"metadata":{"write_ts":1.5,"key":"k","type":"rw-document","write_local_dt":{"hour":8},"platform":"ios"}}`,
			want: `{"data":{"enter_ts":1440688707867},"metadata":{"write_ts":1.5,"key":"k","type":"rw-document","platform":"ios"},"user_id":"u1"}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Prepare(entry(t, tc.in), "u1")
			if err != nil {
				t.Fatal(err)
			}
			if err := Compare([]Entry{entry(t, tc.want)}, []Entry{got}); err != nil {
				t.Error(err)
			}
			if _, ok := got["user_id"].(string); !ok {
				t.Errorf("user_id = %v", got["user_id"])
			}
		})
	}
}

func TestPrepareRejects(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"data":{}}`, "metadata: missing"},
		{`{"metadata":{"write_ts":1,"key":"k"}}`, "data: missing"},
		{`{"data":{},"metadata":{"key":"k"}}`, "metadata.write_ts: missing"},
		{`{"data":{},"metadata":{"write_ts":"soon","key":"k"}}`, "metadata.write_ts: missing or not a number"},
		{`{"data":{"ts":"x"},"metadata":{"write_ts":1,"key":"k"}}`, "data.ts: not a number"},
		{`{"data":{},"metadata":{"write_ts":1}}`, "metadata.key: missing"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := Prepare(entry(t, tc.in), "u1")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Prepare(%s) = %v, want %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestParseDayRejects(t *testing.T) {
	for _, in := range []string{`{"not":"an array"}`, `[{"a":1}] [2]`, `[`, ``} {
		if _, err := ParseDay([]byte(in)); err == nil {
			t.Errorf("ParseDay(%q) succeeded", in)
		}
	}
}

// TestRealDays prepares every real day file and checks what the original
// script guaranteed: seconds everywhere, a type everywhere, no _id, the
// user's id; and that duplicate entries collapse under the upsert key.
func TestRealDays(t *testing.T) {
	for _, day := range days {
		t.Run(day, func(t *testing.T) {
			entries, err := LoadDay(filepath.Join(realdata.DirT(t), day))
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) == 0 {
				t.Fatal("no entries")
			}
			for i, e := range entries {
				if _, err := Prepare(e, "user-"+day); err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
				md := e["metadata"].(map[string]any)
				if md["write_ts"].(float64) >= 1e11 {
					t.Fatalf("entry %d: write_ts %v still in ms", i, md["write_ts"])
				}
				if ts, ok := e["data"].(map[string]any)["ts"].(float64); ok && ts >= 1e11 {
					t.Fatalf("entry %d: data.ts %v still in ms", i, ts)
				}
				if _, ok := md["type"].(string); !ok {
					t.Fatalf("entry %d: no metadata.type", i)
				}
				if _, ok := e["_id"]; ok {
					t.Fatalf("entry %d: _id kept", i)
				}
				if _, ok := md["write_local_dt"]; ok {
					t.Fatalf("entry %d: write_local_dt kept", i)
				}
				if e["user_id"] != "user-"+day {
					t.Fatalf("entry %d: user_id %v", i, e["user_id"])
				}
			}
			want := Expected(entries)
			if len(want) > len(entries) || len(want) == 0 {
				t.Fatalf("Expected: %d documents from %d entries", len(want), len(entries))
			}
			t.Logf("%d entries, %d distinct upsert keys", len(entries), len(want))
			if err := Compare(want, want); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestExpectedMergesDuplicates(t *testing.T) {
	a := entry(t, `{"user_id":"u","data":{"v":1},"metadata":{"write_ts":2,"key":"k","type":"t"},"extra":"old"}`)
	b := entry(t, `{"user_id":"u","data":{"v":2},"metadata":{"write_ts":2,"key":"k","type":"t"}}`)
	c := entry(t, `{"user_id":"u","data":{"v":3},"metadata":{"write_ts":1,"key":"k","type":"t"}}`)
	got := Expected([]Entry{a, b, c})
	want := []Entry{
		entry(t, `{"data":{"v":3},"metadata":{"write_ts":1,"key":"k","type":"t"}}`),
		entry(t, `{"data":{"v":2},"metadata":{"write_ts":2,"key":"k","type":"t"},"extra":"old"}`),
	}
	if err := Compare(want, got); err != nil {
		t.Error(err)
	}
	if got[0]["data"].(map[string]any)["v"] != 3.0 {
		t.Errorf("not sorted by write_ts: %v", got)
	}
}

func TestCompareFindsDifferences(t *testing.T) {
	w := []Entry{entry(t, `{"data":{"v":1,"loc":[1,2]},"metadata":{"write_ts":1,"key":"k","type":"t"}}`)}
	for _, tc := range []struct{ got, want string }{
		{`[]`, "got 0 documents, want 1"},
		{`[{"data":{"v":1,"loc":[1,3]},"metadata":{"write_ts":1,"key":"k","type":"t"}}]`, "data.loc"},
		{`[{"data":{"v":1,"loc":[1,2]},"metadata":{"write_ts":1,"key":"other","type":"t"}}]`, "missing document"},
	} {
		var got []Entry
		json.Unmarshal([]byte(tc.got), &got)
		err := Compare(w, got)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Compare(%s) = %v, want %q", tc.got, err, tc.want)
		}
	}
}

// A malformed entry anywhere in a file stops the upload before anything is
// sent: the PM address here is never contacted (nothing listens on port 1).
func TestUploadRejectsMalformedFileBeforeSending(t *testing.T) {
	var entries []Entry
	json.Unmarshal([]byte(`[
		{"data":{"ts":1},"metadata":{"write_ts":1,"key":"k","type":"t"}},
		{"data":{"ts":2},"metadata":{"write_ts":2,"type":"t"}},
		{"metadata":{"write_ts":3,"key":"k"}}
	]`), &entries)
	c := &Client{User: "u"}
	_, err := c.Upload(context.Background(), "http://127.0.0.1:1", entries)
	if err == nil {
		t.Fatal("upload of a malformed file succeeded")
	}
	for _, w := range []string{"nothing sent", "entry 1: metadata.key", "entry 2: data: missing"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

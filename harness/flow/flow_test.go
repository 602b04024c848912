package flow

import (
	"encoding/json"
	"testing"

	"github.com/e-mission/upc/services/count"
)

func TestMachine(t *testing.T) {
	for in, want := range map[string]string{"agent-a:54321": "agent-a", "local": "local", "10.0.0.1:1": "10.0.0.1", "": ""} {
		if got := Machine(in); got != want {
			t.Errorf("Machine(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestBoxIsAValidRegion: the count step's region passes the count
// service's own validation (closed ring, GeoJSON Polygon).
func TestBoxIsAValidRegion(t *testing.T) {
	region, err := json.Marshal(map[string]any{"geometry": box(-122.08, 37.39, countBox)})
	if err != nil {
		t.Fatal(err)
	}
	q := count.Query{Offset: countOffset, Alpha: countAlpha, StartTs: 1, EndTs: 2, SelRegion: region}
	geom, err := q.Validate()
	if err != nil || geom == nil {
		t.Fatalf("count rejects the box: %v", err)
	}
	if c, err := q.Cost(); err != nil || c <= 0 || c > 0.1 {
		t.Errorf("count cost %v, %v: want a small positive cost", c, err)
	}
}

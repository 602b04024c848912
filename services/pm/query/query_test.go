package query_test

import (
	"bytes"
	"encoding/json"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/e-mission/upc/services/pm/pmtest"
	"github.com/e-mission/upc/services/pm/query"
)

func parse(t *testing.T, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("parse %s: %v", s, err)
	}
	return m
}

// A small collection whose documents exercise each operator's edge cases.
var fixture = map[string]string{
	"loc1":    `{"_id":"5f0000000000000000000001","user_id":"u1","metadata":{"key":"background/location","write_ts":100,"type":"sensor-data"},"data":{"ts":10,"loc":{"type":"Point","coordinates":[-122.08,37.39]},"accuracy":30}}`,
	"loc2":    `{"_id":"5f0000000000000000000002","user_id":"u1","metadata":{"key":"background/location","write_ts":200,"type":"sensor-data"},"data":{"ts":20.5,"loc":{"type":"Point","coordinates":[-122.27,37.87]},"accuracy":5}}`,
	"motion":  `{"_id":"5f0000000000000000000003","user_id":"u1","metadata":{"key":"background/motion_activity","write_ts":150,"type":"sensor-data"},"data":{"ts":15,"type":4,"confidence":100}}`,
	"trans":   `{"_id":"5f0000000000000000000004","user_id":"u2","metadata":{"key":"statemachine/transition","write_ts":300,"type":"message"},"data":{"ts":30,"transition":"local.transition.stopped_moving","curr_state":2}}`,
	"invalid": `{"_id":"5f0000000000000000000005","user_id":"u1","metadata":{"key":"background/filtered_location","write_ts":400,"type":"sensor-data"},"data":{"ts":40,"loc":{"type":"Point","coordinates":[-122.08,37.39]}},"invalid":true}`,
	"arr":     `{"_id":"5f0000000000000000000006","user_id":"u3","tags":["a","b"],"data":{"sections":[{"mode":1},{"mode":5}],"ts":"not a number"}}`,
	"nullv":   `{"_id":"5f0000000000000000000007","user_id":null,"metadata":{"key":"config/sensor_config","write_ts":500}}`,
}

func fixtureDocs(t *testing.T) map[string]map[string]any {
	out := map[string]map[string]any{}
	for name, s := range fixture {
		out[name] = parse(t, s)
	}
	return out
}

func TestFilterTable(t *testing.T) {
	docs := fixtureDocs(t)
	tests := []struct {
		name, filter string
		want         []string
	}{
		{"empty matches all", `{}`, []string{"arr", "invalid", "loc1", "loc2", "motion", "nullv", "trans"}},
		{"key equality", `{"metadata.key":"background/location"}`, []string{"loc1", "loc2"}},
		{"time range on data.ts", `{"data.ts":{"$gte":10,"$lte":20.5}}`, []string{"loc1", "loc2", "motion"}},
		{"exclusive bounds", `{"data.ts":{"$gt":10,"$lt":20.5}}`, []string{"motion"}},
		{"numbers compare across int and float", `{"data.ts":{"$eq":20.50}}`, []string{"loc2"}},
		{"range never matches a string", `{"data.ts":{"$gte":-1e300}}`, []string{"invalid", "loc1", "loc2", "motion", "trans"}},
		{"$in on keys with time range (timeseries find_entries)", `{"metadata.key":{"$in":["background/location","background/motion_activity"]},"data.ts":{"$lte":15,"$gte":0}}`, []string{"loc1", "motion"}},
		{"$nin", `{"metadata.key":{"$nin":["background/location","background/motion_activity"]}}`, []string{"arr", "invalid", "nullv", "trans"}},
		{"$ne on user", `{"user_id":{"$ne":"u1"}}`, []string{"arr", "nullv", "trans"}},
		{"invalid $exists false (analysis queries)", `{"invalid":{"$exists":false},"metadata.key":"background/filtered_location"}`, nil},
		{"$exists true", `{"invalid":{"$exists":true}}`, []string{"invalid"}},
		{"null matches null and missing", `{"user_id":null}`, []string{"nullv"}},
		{"missing field equals null", `{"tags":null}`, []string{"invalid", "loc1", "loc2", "motion", "nullv", "trans"}},
		{"$or of types (usercache)", `{"$or":[{"metadata.type":"message"},{"metadata.key":"config/sensor_config"}]}`, []string{"nullv", "trans"}},
		{"$and", `{"$and":[{"data.ts":{"$gte":10}},{"data.ts":{"$lt":20}}]}`, []string{"loc1", "motion"}},
		{"$nor", `{"$nor":[{"user_id":"u1"},{"user_id":"u2"}]}`, []string{"arr", "nullv"}},
		{"array contains", `{"tags":"b"}`, []string{"arr"}},
		{"array of documents by dotted path", `{"data.sections.mode":5}`, []string{"arr"}},
		{"array index path", `{"data.sections.0.mode":1}`, []string{"arr"}},
		{"whole array equality", `{"tags":["a","b"]}`, []string{"arr"}},
		{"$not", `{"data.ts":{"$not":{"$gt":15}}}`, []string{"arr", "loc1", "motion", "nullv"}},
		{"ObjectId as $oid", `{"_id":{"$oid":"5f0000000000000000000004"}}`, []string{"trans"}},
		{"ObjectId as hex", `{"_id":{"$in":["5f0000000000000000000004","5f0000000000000000000001"]}}`, []string{"loc1", "trans"}},
		{"subdocument equality", `{"data.loc":{"type":"Point","coordinates":[-122.08,37.39]}}`, []string{"invalid", "loc1"}},
		{"write_ts range (usercache)", `{"metadata.write_ts":{"$gt":150,"$lte":400}}`, []string{"invalid", "loc2", "trans"}},
		{"geoWithin Polygon around Mountain View", `{"data.loc":{"$geoWithin":{"$geometry":{"type":"Polygon","coordinates":[[[-122.2,37.3],[-122.0,37.3],[-122.0,37.5],[-122.2,37.5],[-122.2,37.3]]]}}}}`, []string{"invalid", "loc1"}},
		{"geoWithin MultiPolygon", `{"data.loc":{"$geoWithin":{"$geometry":{"type":"MultiPolygon","coordinates":[[[[-122.2,37.3],[-122.0,37.3],[-122.0,37.5],[-122.2,37.5],[-122.2,37.3]]],[[[-122.3,37.8],[-122.2,37.8],[-122.2,37.9],[-122.3,37.9],[-122.3,37.8]]]]}}}}`, []string{"invalid", "loc1", "loc2"}},
		{"geoWithin hole excludes", `{"data.loc":{"$geoWithin":{"$geometry":{"type":"Polygon","coordinates":[[[-123,37],[-121,37],[-121,38.5],[-123,38.5],[-123,37]],[[-122.1,37.3],[-122.0,37.3],[-122.0,37.5],[-122.1,37.5],[-122.1,37.3]]]}}}}`, []string{"loc2"}},
		{"geoWithin centerSphere 1 km", `{"data.loc":{"$geoWithin":{"$centerSphere":[[-122.08,37.391],0.000157]}}}`, []string{"invalid", "loc1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := query.Compile(parse(t, tc.filter))
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			var got []string
			for name, d := range docs {
				if f.Match(d) {
					got = append(got, name)
				}
			}
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("matched %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct{ filter, want string }{
		{`{"data.ts":{"$regex":"x"}}`, "unknown operator $regex"},
		{`{"$where":"1"}`, "unknown top-level operator $where"},
		{`{"$or":[]}`, "$or needs a non-empty array"},
		{`{"$and":[1]}`, "$and[0] must be a filter object"},
		{`{"data.ts":{"$in":5}}`, "$in needs an array"},
		{`{"data.ts":{"$gt":1,"x":2}}`, "cannot mix operators and fields"},
		{`{"data.ts":{"$exists":"yes"}}`, "$exists needs true or false"},
		{`{"a..b":1}`, "empty part"},
		{`{"data.loc":{"$geoWithin":{"$box":[[0,0],[1,1]]}}}`, "$box is not supported"},
		{`{"data.loc":{"$geoWithin":{"$geometry":{"type":"Point","coordinates":[0,0]}}}}`, "must be Polygon or MultiPolygon"},
		{`{"data.loc":{"$geoWithin":{"$geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}}}}`, "not closed"},
		{`{"data.loc":{"$geoWithin":{"$geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}}}}`, "at least 4"},
		{`{"data.loc":{"$geoWithin":{"$geometry":{"type":"Polygon","coordinates":[[[0,0],[200,0],[1,1],[0,0]]]}}}}`, "longitude must be in"},
		{`{"_id":{"$oid":"xyz"}}`, "$oid must be a 24-hex string"},
	}
	for _, tc := range tests {
		t.Run(tc.filter, func(t *testing.T) {
			_, err := query.Compile(parse(t, tc.filter))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// On the sphere, the edge between two points at 60°N bulges north (to
// ~63.4°N at the middle): MongoDB's 2dsphere counts a point at 62°N inside a
// polygon bounded by that edge, a flat lng/lat test would not.
func TestGeoWithinIsSpherical(t *testing.T) {
	f, err := query.Compile(parse(t, `{"p":{"$geoWithin":{"$geometry":{"type":"Polygon","coordinates":[[[-30,50],[30,50],[30,60],[-30,60],[-30,50]]]}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lng, lat float64
		in       bool
	}{{0, 62, true}, {0, 64, false}, {0, 55, true}, {29.9, 59.9, true}, {0, 49, false}, {31, 55, false}} {
		doc := map[string]any{"p": map[string]any{"type": "Point", "coordinates": []any{tc.lng, tc.lat}}}
		if got := f.Match(doc); got != tc.in {
			t.Errorf("point (%v, %v): within = %v, want %v", tc.lng, tc.lat, got, tc.in)
		}
	}
	// A LineString is within only when all of it is.
	line := map[string]any{"p": map[string]any{"type": "LineString", "coordinates": []any{[]any{0.0, 55.0}, []any{40.0, 55.0}}}}
	if f.Match(line) {
		t.Error("a line leaving the polygon matched")
	}
}

// Seen from the antipode of a polygon, its edges wind the same amount the
// other way: a point there must not count as within (a box around Mountain
// View once matched points at its antipode in the Indian Ocean and back).
func TestGeoWithinExcludesAntipode(t *testing.T) {
	box := `{"p":{"$geoWithin":{"$geometry":{"type":"Polygon","coordinates":[[[-122.1,37.38],[-122.07,37.38],[-122.07,37.40],[-122.1,37.40],[-122.1,37.38]]]}}}}`
	f, err := query.Compile(parse(t, box))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lng, lat float64
		in       bool
	}{{-122.08, 37.39, true}, {57.92, -37.39, false}, {-122.08 + 180, 37.39, false}, {-122.08, -37.39, false}} {
		doc := map[string]any{"p": map[string]any{"type": "Point", "coordinates": []any{tc.lng, tc.lat}}}
		if got := f.Match(doc); got != tc.in {
			t.Errorf("point (%v, %v): within = %v, want %v", tc.lng, tc.lat, got, tc.in)
		}
	}
	// And the other way round: a box at the antipode holds none of Mountain View.
	anti := `{"p":{"$geoWithin":{"$geometry":{"type":"Polygon","coordinates":[[[57.9,-37.40],[57.93,-37.40],[57.93,-37.38],[57.9,-37.38],[57.9,-37.40]]]}}}}`
	g, err := query.Compile(parse(t, anti))
	if err != nil {
		t.Fatal(err)
	}
	if g.Match(map[string]any{"p": map[string]any{"type": "Point", "coordinates": []any{-122.08, 37.39}}}) {
		t.Error("a point at the antipode of the box matched")
	}
}

func TestUpdate(t *testing.T) {
	tests := []struct {
		name, doc, update, want, err string
	}{
		{"set nested creates objects", `{"_id":"a","x":1}`, `{"$set":{"data.a.b":2,"x":3}}`, `{"_id":"a","data":{"a":{"b":2}},"x":3}`, ""},
		{"unset", `{"_id":"a","x":1,"y":{"z":1,"w":2}}`, `{"$unset":{"x":"","y.z":1}}`, `{"_id":"a","y":{"w":2}}`, ""},
		{"inc keeps integers", `{"_id":"a","n":41}`, `{"$inc":{"n":1,"m":2.5}}`, `{"_id":"a","m":2.5,"n":42}`, ""},
		{"set array element", `{"_id":"a","l":[1,2,3]}`, `{"$set":{"l.1":9}}`, `{"_id":"a","l":[1,9,3]}`, ""},
		{"cannot change _id", `{"_id":"a"}`, `{"$set":{"_id":"b"}}`, ``, "immutable"},
		{"cannot traverse a string", `{"_id":"a","s":"x"}`, `{"$set":{"s.t":1}}`, ``, "cannot create field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := query.CompileUpdate(parse(t, tc.update), false, false)
			if err != nil {
				t.Fatal(err)
			}
			doc := parse(t, tc.doc)
			before := mustJSON(t, doc)
			got, err := u.Apply(doc, false)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := mustJSON(t, got); g != tc.want {
				t.Errorf("got %s, want %s", g, tc.want)
			}
			if mustJSON(t, doc) != before {
				t.Error("Apply changed its input")
			}
		})
	}
	for _, bad := range []struct{ u, want string }{
		{`{"$push":{"a":1}}`, "unknown update operator $push"},
		{`{"$set":{"a":1},"b":2}`, "mixes operators and fields"},
		{`{"a":1}`, "must use operators"},
		{`{"$set":{"a":1},"$unset":{"a.b":1}}`, "conflicts"},
		{`{"$set":5}`, "needs an object"},
		{`{"$inc":{"a":"x"}}`, "needs a number"},
		{`{"$set":{"a":{"$bad":1}}}`, "not allowed in a document"},
	} {
		if _, err := query.CompileUpdate(parse(t, bad.u), false, false); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("update %s: error %v, want %q", bad.u, err, bad.want)
		}
	}
	if _, err := query.CompileUpdate(parse(t, `{"$set":{"a":1}}`), true, false); err == nil {
		t.Error("replace_one accepted operators")
	}
	r, err := query.CompileUpdate(parse(t, `{"b":2}`), true, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Apply(parse(t, `{"_id":"k","a":1}`), false)
	if err != nil || mustJSON(t, got) != `{"_id":"k","b":2}` {
		t.Errorf("replacement gave %v, %v", got, err)
	}
}

func TestProjectionAndSort(t *testing.T) {
	doc := parse(t, `{"_id":"x","user_id":"u","metadata":{"key":"k","write_ts":1},"data":{"ts":2,"loc":{"type":"Point"}}}`)
	tests := []struct{ proj, want string }{
		{`{"_id":false,"user_id":false}`, `{"data":{"loc":{"type":"Point"},"ts":2},"metadata":{"key":"k","write_ts":1}}`},
		{`{"data.ts":1,"metadata.key":true}`, `{"_id":"x","data":{"ts":2},"metadata":{"key":"k"}}`},
		{`{"data.ts":1,"_id":0}`, `{"data":{"ts":2}}`},
		{`{"_id":1}`, `{"_id":"x"}`},
		{`{"_id":0}`, `{"data":{"loc":{"type":"Point"},"ts":2},"metadata":{"key":"k","write_ts":1},"user_id":"u"}`},
	}
	for _, tc := range tests {
		p, err := query.CompileProjection(parse(t, tc.proj))
		if err != nil {
			t.Fatalf("%s: %v", tc.proj, err)
		}
		if got := mustJSON(t, p.Apply(doc)); got != tc.want {
			t.Errorf("projection %s: got %s, want %s", tc.proj, got, tc.want)
		}
	}
	if _, err := query.CompileProjection(parse(t, `{"a":1,"b":0}`)); err == nil {
		t.Error("mixed projection accepted")
	}

	docs := []map[string]any{
		parse(t, `{"n":"a","k":"x","ts":3}`),
		parse(t, `{"n":"b","k":"y","ts":1}`),
		parse(t, `{"n":"c","k":"x","ts":2}`),
		parse(t, `{"n":"d","k":"y"}`),
	}
	query.Sorter{{Path: "k"}, {Path: "ts", Desc: true}}.Sort(docs)
	var order []string
	for _, d := range docs {
		order = append(order, d["n"].(string))
	}
	if got := strings.Join(order, ""); got != "acbd" {
		t.Errorf("sort by k asc, ts desc: %s, want acbd (missing sorts as null, lowest)", got)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(b.String())
}

// e-mission's timeseries queries (emission/storage/timeseries/builtin_timeseries.py:
// key list, time query on data.ts, geo query on data.loc, extra queries) run
// on a real day and checked against the same predicate written in plain Go.
func TestEmissionQueriesOnRealDay(t *testing.T) {
	docs := pmtest.LoadDay(t, filepath.Join(pmtest.RealExamplesDir(t), "shankari_2015-aug-27"))
	num := func(d map[string]any, path string) (float64, bool) {
		v, ok := query.Get(d, path)
		if !ok {
			return 0, false
		}
		return query.Number(v)
	}
	str := func(d map[string]any, path string) string {
		v, _ := query.Get(d, path)
		s, _ := v.(string)
		return s
	}
	first, _ := num(docs[0], "data.ts")
	start, end := first+3600, first+4*3600
	// A box around the first filtered location, small enough that edge curvature is negligible.
	var lng, lat float64
	for _, d := range docs {
		if str(d, "metadata.key") == "background/filtered_location" {
			lng, _ = num(d, "data.loc.coordinates.0")
			lat, _ = num(d, "data.loc.coordinates.1")
			break
		}
	}
	inBox := func(d map[string]any) bool {
		x, ok1 := num(d, "data.loc.coordinates.0")
		y, ok2 := num(d, "data.loc.coordinates.1")
		return ok1 && ok2 && math.Abs(x-lng) < 0.01 && math.Abs(y-lat) < 0.01
	}
	box := map[string]any{"$geoWithin": map[string]any{"$geometry": map[string]any{"type": "Polygon", "coordinates": []any{[]any{
		[]any{lng - 0.01, lat - 0.01}, []any{lng + 0.01, lat - 0.01}, []any{lng + 0.01, lat + 0.01}, []any{lng - 0.01, lat + 0.01}, []any{lng - 0.01, lat - 0.01},
	}}}}}
	tests := []struct {
		name   string
		filter map[string]any
		ref    func(map[string]any) bool
	}{
		{"find_entries one key", map[string]any{"metadata.key": map[string]any{"$in": []any{"background/location"}}},
			func(d map[string]any) bool { return str(d, "metadata.key") == "background/location" }},
		{"find_entries keys and time range", map[string]any{
			"metadata.key": map[string]any{"$in": []any{"background/filtered_location", "background/motion_activity"}},
			"data.ts":      map[string]any{"$gte": start, "$lte": end}},
			func(d map[string]any) bool {
				k := str(d, "metadata.key")
				ts, ok := num(d, "data.ts")
				return (k == "background/filtered_location" || k == "background/motion_activity") && ok && ts >= start && ts <= end
			}},
		{"time range only", map[string]any{"data.ts": map[string]any{"$gte": start, "$lte": end}},
			func(d map[string]any) bool { ts, ok := num(d, "data.ts"); return ok && ts >= start && ts <= end }},
		{"write_ts range (usercache moveToLongTerm)", map[string]any{"metadata.write_ts": map[string]any{"$lte": end}},
			func(d map[string]any) bool { w, ok := num(d, "metadata.write_ts"); return ok && w <= end }},
		{"geo query on data.loc", map[string]any{"metadata.key": "background/filtered_location", "data.loc": box},
			func(d map[string]any) bool {
				return str(d, "metadata.key") == "background/filtered_location" && inBox(d)
			}},
		{"extra query filter=time", map[string]any{"metadata.key": "background/location", "data.filter": "time"},
			func(d map[string]any) bool {
				return str(d, "metadata.key") == "background/location" && str(d, "data.filter") == "time"
			}},
		{"transitions $or", map[string]any{"$or": []any{map[string]any{"metadata.key": "statemachine/transition"}, map[string]any{"data.ts": map[string]any{"$lt": start}}}},
			func(d map[string]any) bool {
				ts, ok := num(d, "data.ts")
				return str(d, "metadata.key") == "statemachine/transition" || (ok && ts < start)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := query.Compile(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			got, want := 0, 0
			for _, d := range docs {
				m, r := f.Match(d), tc.ref(d)
				if m != r {
					t.Fatalf("document %v: filter says %v, reference %v", d["_id"], m, r)
				}
				if r {
					want++
				}
				if m {
					got++
				}
			}
			if want == 0 {
				t.Fatal("the reference matched nothing: the case tests nothing")
			}
			t.Logf("%d of %d documents", got, len(docs))
		})
	}
}

// Within restricts a filter to documents whose path holds one allowed
// string (not an array holding one), and plans like an $in of strings.
func TestWithin(t *testing.T) {
	f, err := query.Compile(map[string]any{"$or": []any{map[string]any{"metadata.key": "b"}, map[string]any{"x": 1.0}}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := f.Within("metadata.key", []string{"a", "c"})
	if err != nil {
		t.Fatal(err)
	}
	doc := func(key any, x float64) map[string]any {
		return map[string]any{"metadata": map[string]any{"key": key}, "x": x}
	}
	for _, c := range []struct {
		d    map[string]any
		want bool
	}{
		{doc("a", 1), true},
		{doc("a", 2), false}, // f says no
		{doc("b", 1), false}, // not within
		{doc([]any{"a", "b"}, 1), false},
		{doc(nil, 1), false},
		{map[string]any{"x": 1.0}, false},
		{map[string]any{"metadata": []any{map[string]any{"key": "a"}, map[string]any{"key": "b"}}, "x": 1.0}, false},
	} {
		if got := w.Match(c.d); got != c.want {
			t.Errorf("%v: %v, want %v", c.d, got, c.want)
		}
	}
	if f.Match(doc("b", 1)) != true {
		t.Error("Within changed the filter it restricts")
	}
	// Planned as the intersection of the keys.
	g, _ := query.Compile(map[string]any{"metadata.key": map[string]any{"$in": []any{"a", "b"}}, "data.ts": map[string]any{"$gte": 1.0}})
	gw, _ := g.Within("metadata.key", []string{"b", "c"})
	p, ok := gw.IndexPlan()
	if !ok || len(p.Keys) != 1 || p.Keys[0] != "b" || p.TS == nil {
		t.Errorf("plan %+v %v", p, ok)
	}
	e, _ := query.MatchAll().Within("metadata.key", nil)
	if p, ok := e.IndexPlan(); !ok || p.Keys == nil || len(p.Keys) != 0 || e.Match(doc("a", 1)) {
		t.Errorf("nothing allowed: plan %+v %v", p, ok)
	}
}

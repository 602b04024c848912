package plot

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// wellFormed parses the SVG as XML and counts elements by name.
func wellFormed(t *testing.T, svg []byte) map[string]int {
	t.Helper()
	n := map[string]int{}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			n[se.Name.Local]++
		}
	}
}

func TestStackedBars(t *testing.T) {
	svg := StackedBars("t <&>", "ms", []string{"u1", "u2"}, []string{"launch", "upload"},
		[][]float64{{300, 100}, {0, 50}})
	n := wellFormed(t, svg)
	// 1 background + 3 non-zero segments + 2 legend swatches.
	if n["rect"] != 6 {
		t.Errorf("rects = %d, want 6", n["rect"])
	}
	s := string(svg)
	// The longest bar (400) sets the scale to 500: 300 ms is 3/5 of 520 px.
	if !strings.Contains(s, `width="312.0"`) {
		t.Errorf("launch segment of u1 is not 312 px wide:\n%s", s)
	}
	if !strings.Contains(s, "t &lt;&amp;&gt;") {
		t.Error("title not escaped")
	}
}

func TestHistogram(t *testing.T) {
	svg := Histogram("launch", "ms", []float64{250, 270, 300, 900}, 10)
	n := wellFormed(t, svg)
	if n["line"] < 4+1 {
		t.Errorf("want a tick per value and a median line, got %d lines", n["line"])
	}
	s := string(svg)
	if !strings.Contains(s, "median 285 ms (n=4)") {
		t.Errorf("median missing:\n%s", s)
	}
	// 250, 270 in [200,300); 300 in [300,400); 900 in [900,1000]: three bars.
	if n["rect"] != 1+3 {
		t.Errorf("rects = %d, want 4", n["rect"])
	}
	if n := wellFormed(t, Histogram("empty", "ms", nil, 10)); n["text"] != 2 {
		t.Errorf("empty histogram: %v", n)
	}
}

func TestNiceCeil(t *testing.T) {
	for _, c := range []struct{ in, want float64 }{{0, 1}, {0.3, 0.5}, {1, 1}, {1.1, 2}, {420, 500}, {999, 1000}, {1001, 2000}} {
		if got := niceCeil(c.in); got != c.want {
			t.Errorf("niceCeil(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

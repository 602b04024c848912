package plot

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/plot/plottest"
)

var keep = flag.String("keep", "", "write every test figure (SVG and PDF) into this folder, to look at")

// render renders f both ways, checks each is a well-formed document of its
// kind whose text holds every string in want, and returns the SVG's text.
func render(t *testing.T, name string, f *Figure, want ...string) string {
	t.Helper()
	svg, err := f.SVG()
	if err != nil {
		t.Fatal(err)
	}
	pdf, err := f.PDF()
	if err != nil {
		t.Fatal(err)
	}
	if *keep != "" {
		for ext, b := range map[string][]byte{".svg": svg, ".pdf": pdf} {
			if err := os.WriteFile(filepath.Join(*keep, name+ext), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := plottest.SVGText(svg)
	if err != nil {
		t.Fatalf("svg: %v", err)
	}
	pt, err := plottest.PDFText(pdf)
	if err != nil {
		t.Fatalf("pdf: %v", err)
	}
	for _, w := range append([]string{f.Title()}, want...) {
		if !strings.Contains(st, w) {
			t.Errorf("svg lacks %q; its text:\n%s", w, st)
		}
		if !strings.Contains(pt, plottest.PDFString(w)) {
			t.Errorf("pdf lacks %q; its text:\n%s", w, pt)
		}
	}
	// The same figure is the same bytes.
	svg2, _ := f.SVG()
	pdf2, _ := f.PDF()
	if !bytes.Equal(svg, svg2) {
		t.Error("two renderings of one figure give different SVGs")
	}
	if !bytes.Equal(pdf, pdf2) {
		t.Error("two renderings of one figure give different PDFs")
	}
	return st
}

// elements counts an SVG's elements by name.
func elements(t *testing.T, svg []byte) map[string]int {
	t.Helper()
	n := map[string]int{}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			n[se.Name.Local]++
		}
	}
}

func TestCDF(t *testing.T) {
	f, err := CDF("Launch latency", "ms", []Series{
		{Name: "docker: PM", Values: []float64{300, 250, 270, 900}},
		{Name: "kubernetes: PM", Values: []float64{1200, 1400, 1100}},
		{Name: "nothing", Values: nil},
	})
	if err != nil {
		t.Fatal(err)
	}
	txt := render(t, "cdf", f, "docker: PM (n=4, median 285)", "kubernetes: PM (n=3, median 1200)", "fraction of values <= x", "ms")
	if strings.Contains(txt, "nothing") {
		t.Error("an empty series has a legend entry")
	}
	if _, err := CDF("bad", "ms", []Series{{Name: "x", Values: []float64{1, math.NaN()}}}); err == nil {
		t.Error("a NaN value was drawn")
	}
	empty, err := CDF("Nothing launched", "ms", nil)
	if err != nil {
		t.Fatal(err)
	}
	render(t, "cdf-empty", empty, "no values")
}

func TestBars(t *testing.T) {
	groups := []string{"launch", "unseal", "upload"}
	nan := math.NaN()
	f, err := Bars("Phases", "ms", "bar: median, whisker: 10th–90th percentile", groups, []BarSeries{
		{Name: "docker", Mid: []float64{300, 12, 800}, Low: []float64{250, 10, 600}, High: []float64{450, 14, 900}},
		{Name: "kubernetes", Mid: []float64{1200, 15, 700}, Low: []float64{nan, 12, 650}, High: []float64{nan, 20, 720}},
	})
	if err != nil {
		t.Fatal(err)
	}
	txt := render(t, "bars", f, "launch", "unseal", "upload", "docker", "kubernetes", "whisker: 10th–90th percentile")
	// The first group is the top row: its label is drawn last on the y axis
	// (rows run bottom up).
	if i, j := strings.Index(txt, "upload"), strings.Index(txt, "launch"); i < 0 || j < i {
		t.Errorf("rows are not top down (launch at %d, upload at %d):\n%s", j, i, txt)
	}
	one, err := Bars("Phases (docker)", "ms", "", groups, []BarSeries{{Name: "docker", Mid: []float64{1, 2, 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if txt := render(t, "bars-one", one, "launch"); strings.Contains(strings.ReplaceAll(txt, "Phases (docker)", ""), "docker") {
		t.Error("a single series gets a legend")
	}
	if _, err := Bars("bad", "ms", "", groups, []BarSeries{{Name: "short", Mid: []float64{1}}}); err == nil {
		t.Error("a series without one value per group was drawn")
	}
}

func TestStackedBars(t *testing.T) {
	f, err := StackedBars("Per-user phases", "ms", []string{"u1", "u2 <&>"}, []string{"launch", "upload"},
		[][]float64{{300, 100}, {0, 50}})
	if err != nil {
		t.Fatal(err)
	}
	render(t, "stacked", f, "u1", "u2 <&>", "launch", "upload")
	svg, _ := f.SVG()
	if n := elements(t, svg); n["svg"] != 1 {
		t.Errorf("want one svg element, got %v", n)
	}
	if _, err := StackedBars("bad", "ms", []string{"u1"}, []string{"a"}, nil); err == nil {
		t.Error("rows without values were drawn")
	}
}

// laplace is a seeded Laplace draw of scale b.
func laplace(r *rand.Rand, b float64) float64 {
	u := r.Float64() - 0.5
	return -b * math.Copysign(1, u) * math.Log(1-2*math.Abs(u))
}

// TestErrorVsEpsilon draws synthetic runs: seeded Laplace noise at five ε,
// twenty seeds each, against the mechanism's promise Δf/ε.
func TestErrorVsEpsilon(t *testing.T) {
	var runs []EpsilonRun
	for _, eps := range []float64{0.01, 0.03, 0.1, 0.3, 1} {
		for seed := uint64(1); seed <= 20; seed++ {
			r := rand.New(rand.NewPCG(seed, 7))
			runs = append(runs, EpsilonRun{Epsilon: eps, Seed: seed, Exact: 42, Noisy: 42 + laplace(r, 1/eps)})
		}
	}
	f, err := ErrorVsEpsilon("Noisy count: error against epsilon", []EpsilonSeries{
		{Name: "count", Runs: runs, Expected: func(eps float64) float64 { return 1 / eps }},
	})
	if err != nil {
		t.Fatal(err)
	}
	render(t, "epsilon", f, "count: runs (n=100)", "count: mean error", "count: expected error", "epsilon (privacy cost per query)")
	// A run that published the exact answer puts the error on a linear axis.
	runs = append(runs, EpsilonRun{Epsilon: 1, Seed: 99, Exact: 3, Noisy: 3})
	lin, err := ErrorVsEpsilon("With an exact answer", []EpsilonSeries{{Name: "count", Runs: runs}})
	if err != nil {
		t.Fatal(err)
	}
	if lin.p.Y.Min != 0 {
		t.Errorf("a zero error left the y axis on a log scale")
	}
	render(t, "epsilon-linear", lin, "count: runs (n=101)")
	if _, err := ErrorVsEpsilon("bad", []EpsilonSeries{{Name: "x", Runs: []EpsilonRun{{Epsilon: 0, Exact: 1, Noisy: 2}}}}); err == nil {
		t.Error("ε = 0 was drawn on a log axis")
	}
	empty, err := ErrorVsEpsilon("No runs", nil)
	if err != nil {
		t.Fatal(err)
	}
	render(t, "epsilon-empty", empty, "no runs")
}

func TestBudgetOverTime(t *testing.T) {
	s := func(name string, costs ...float64) BudgetSeries {
		b := BudgetSeries{Name: name, Initial: 1}
		left := 1.0
		for i, c := range costs {
			left -= c
			b.Points = append(b.Points, BudgetPoint{At: time.Duration(i+1) * 30 * time.Second, Remaining: left})
		}
		return b
	}
	f, err := BudgetOverTime("Privacy budget over time", []BudgetSeries{s("user 1", 0.14, 0.06), s("user 2", 0.03, 0.03, 0.5)})
	if err != nil {
		t.Fatal(err)
	}
	render(t, "budget", f, "user 1", "user 2", "privacy budget left (epsilon)", "time since start (s)")
	bad := s("late", 0.1, 0.1)
	bad.Points[0].At = time.Hour
	if _, err := BudgetOverTime("bad", []BudgetSeries{bad}); err == nil {
		t.Error("points out of time order were drawn")
	}
}

// Package plot draws the figures of the e2e report and of the aggregator's
// result with gonum/plot: latency CDFs, bars with whiskers, stacked bars, a
// noisy answer's error against ε and a privacy budget over time. Each Figure
// renders as SVG (embedded in the Markdown reports) and as PDF (fonts
// embedded, to put in a paper). A figure depends only on its input: its SVG
// is the same bytes on every run, and its PDF carries a fixed creation date.
package plot

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"codeberg.org/go-pdf/fpdf"
	"golang.org/x/text/encoding/charmap"
	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgpdf"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Palette colours series in order: Okabe-Ito, safe for colour-blind readers
// and distinct in grey print.
var Palette = []color.Color{
	rgb(0x00, 0x72, 0xB2), rgb(0xE6, 0x9F, 0x00), rgb(0x00, 0x9E, 0x73), rgb(0xCC, 0x79, 0xA7),
	rgb(0x56, 0xB4, 0xE9), rgb(0xD5, 0x5E, 0x00), rgb(0xF0, 0xE4, 0x42), rgb(0x00, 0x00, 0x00),
}

func rgb(r, g, b uint8) color.Color { return color.RGBA{R: r, G: g, B: b, A: 0xff} }

// colour is series i's colour.
func colour(i int) color.Color { return Palette[i%len(Palette)] }

// dashes are the line patterns that tell series apart beside their colour
// (solid first), cycling after the palette does.
var dashes = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(2), vg.Points(2)}, {vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)}}

func dash(i int) []vg.Length { return dashes[(i/len(Palette)+i)%len(dashes)] }

// Default sizes: a figure that fits a two-column paper's full width.
const (
	width  = 6 * vg.Inch
	height = 4 * vg.Inch
)

// Figure is one drawn figure: a plot and, when series are named, a legend in
// a strip right of it (never over the data).
type Figure struct {
	p      *gplot.Plot
	legend gplot.Legend
	// yLabel is drawn here, not by gonum/plot, which places it by the
	// arithmetic middle of the axis range: high up on a log axis, where it
	// pushes the data down.
	yLabel string
	w, h   vg.Length
}

// Title is the figure's title.
func (f *Figure) Title() string { return f.p.Title.Text }

// newFigure starts a figure with the common style: title, axis labels, a
// light grid behind the data.
func newFigure(title, xLabel, yLabel string) *Figure {
	p := gplot.New()
	p.Title.Text = title
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text = xLabel
	g := plotter.NewGrid()
	g.Vertical.Color = color.Gray{Y: 0xe0}
	g.Horizontal.Color = color.Gray{Y: 0xe0}
	p.Add(g)
	p.X.Tick.Marker, p.Y.Tick.Marker = trimTicks{gplot.DefaultTicks{}}, trimTicks{gplot.DefaultTicks{}}
	l := gplot.NewLegend()
	l.Top, l.Left = true, true
	l.TextStyle.Font.Size = vg.Points(10)
	return &Figure{p: p, legend: l, yLabel: yLabel, w: width, h: height}
}

// trimTicks labels ticks without trailing zeros: 250, not 250.00.
type trimTicks struct{ gplot.Ticker }

func (t trimTicks) Ticks(min, max float64) []gplot.Tick {
	ts := t.Ticker.Ticks(min, max)
	for i, tk := range ts {
		if strings.Contains(tk.Label, ".") && !strings.ContainsAny(tk.Label, "eE") {
			ts[i].Label = strings.TrimSuffix(strings.TrimRight(tk.Label, "0"), ".")
		}
	}
	return ts
}

// logAxis puts an axis on a log scale spanning whole decades around
// [lo, hi] (both > 0), so its ends carry labels.
func logAxis(a *gplot.Axis, lo, hi float64) {
	a.Scale, a.Tick.Marker = gplot.LogScale{}, trimTicks{gplot.LogTicks{Prec: -1}}
	a.Min = math.Pow(10, math.Floor(math.Log10(lo)))
	a.Max = math.Pow(10, math.Ceil(math.Log10(hi)))
	if a.Min == a.Max {
		a.Max *= 10
	}
}

// rowsAxis makes room for n rows of bars at 0 … n-1 on the y axis: half a
// row beyond the first and the last.
func rowsAxis(p *gplot.Plot, n int) {
	p.Y.Min, p.Y.Max = -0.6, float64(n)-0.4
}

// noData marks an empty figure so that it still renders, saying why.
func (f *Figure) noData(why string) {
	f.yLabel = ""
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: 0.5, Y: 0.5}}, Labels: []string{why}})
	if err != nil {
		panic(err) // one point, one label: cannot fail
	}
	l.TextStyle[0].XAlign, l.TextStyle[0].YAlign = draw.XCenter, draw.YCenter
	f.p.Add(l)
	f.p.X.Min, f.p.X.Max, f.p.Y.Min, f.p.Y.Max = 0, 1, 0, 1
	f.p.HideAxes()
}

// legendStrip is the width of the strip right of the plot that holds the
// legend: none without one.
func (f *Figure) legendStrip() vg.Length {
	r := f.legend.Rectangle(draw.Canvas{})
	if r.Max.X == r.Min.X {
		return 0
	}
	return r.Max.X - r.Min.X + vg.Points(16)
}

// size is the whole figure's: the plot's, and the legend's strip beside it.
func (f *Figure) size() (w, h vg.Length) { return f.w + f.legendStrip(), f.h }

// draw fills the canvas white and draws the plot, with the legend in a strip
// on the right when there is one.
func (f *Figure) draw(c draw.Canvas) {
	c.SetColor(color.White)
	c.Fill(c.Rectangle.Path())
	pc := c
	if strip := f.legendStrip(); strip > 0 {
		pc = draw.Crop(c, 0, -strip, 0, 0)
		lc := draw.Crop(c, c.Max.X-c.Min.X-strip+vg.Points(10), 0, 0, -vg.Points(24))
		f.legend.Draw(lc)
	}
	if f.yLabel != "" {
		sty := f.p.Y.Label.TextStyle
		sty.Rotation = math.Pi / 2
		sty.XAlign, sty.YAlign = draw.XCenter, draw.YCenter
		strip := sty.Height(f.yLabel) + vg.Points(4)
		lc := pc
		pc = draw.Crop(pc, strip, 0, 0, 0)
		dc := f.p.DataCanvas(pc)
		mid := dc.Center().Y
		lc.FillText(sty, vg.Point{X: lc.Min.X + strip/2, Y: mid}, f.yLabel)
	}
	f.p.Draw(pc)
}

// SVG renders the figure as an SVG document. Fonts are named, not embedded,
// so the file stays small; the PDF embeds them.
func (f *Figure) SVG() ([]byte, error) {
	c := vgsvg.New(f.size())
	f.draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("render %q as svg: %w", f.Title(), err)
	}
	return b.Bytes(), nil
}

// pdfDate is the creation and modification date every PDF carries, so that
// the same figure is the same file. fpdf takes it only as a process-wide
// default, set once, before the first PDF.
var (
	pdfDate     = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	pdfDateOnce sync.Once
)

// PDF renders the figure as a PDF document with its fonts embedded.
func (f *Figure) PDF() ([]byte, error) {
	pdfDateOnce.Do(func() {
		fpdf.SetDefaultCreationDate(pdfDate)
		fpdf.SetDefaultModificationDate(pdfDate)
	})
	c := vgpdf.New(f.size())
	f.draw(draw.New(cp1252Canvas{c}))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("render %q as pdf: %w", f.Title(), err)
	}
	return b.Bytes(), nil
}

// cp1252Canvas hands vgpdf its text in code page 1252, the encoding of the
// fonts vgpdf embeds (it passes strings through as UTF-8 bytes, which a
// reader shows as mojibake past ASCII). A character the code page lacks is
// drawn as "?": figure text keeps to ASCII and Latin-1 ("epsilon", "<=").
type cp1252Canvas struct{ *vgpdf.Canvas }

func (c cp1252Canvas) FillString(f font.Face, pt vg.Point, s string) {
	c.Canvas.FillString(f, pt, CP1252(s))
}

// CP1252 is s in code page 1252, "?" for what the code page lacks: the
// bytes a PDF figure holds for s.
func CP1252(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r < utf8.RuneSelf {
			b = append(b, byte(r))
			continue
		}
		if c, ok := charmap.Windows1252.EncodeRune(r); ok {
			b = append(b, c)
		} else {
			b = append(b, '?')
		}
	}
	return string(b)
}

// finite reports whether every value is a finite number.
func finite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

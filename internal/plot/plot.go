// Package plot draws the few charts the e2e report needs as small,
// self-contained SVG documents: horizontal stacked bars (per-user phase
// timings) and a histogram with a strip of the raw values (latency
// distributions). Output is deterministic so reports can be compared.
package plot

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"slices"
)

// Palette colours series in order (colour-blind safe, Okabe-Ito).
var Palette = []string{"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"}

const (
	font     = `font-family="sans-serif"`
	rowH     = 22
	labelW   = 190
	plotW    = 520
	rightPad = 30
	top      = 40
)

// StackedBars draws one horizontal bar per row, split into series segments.
// values[row][series] are in unit (e.g. "ms"); negative values count as zero.
func StackedBars(title, unit string, rows, series []string, values [][]float64) []byte {
	maxTotal := 0.0
	for _, v := range values {
		maxTotal = math.Max(maxTotal, sum(v))
	}
	scaleMax := niceCeil(maxTotal)
	pos, lines := legendLayout(series)
	legendH := 20*lines + 4
	h := top + len(rows)*rowH + 40 + legendH
	w := labelW + plotW + rightPad
	var b bytes.Buffer
	header(&b, w, h, title)
	axis(&b, scaleMax, unit, top, top+len(rows)*rowH)
	for i, row := range rows {
		y := top + i*rowH
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" text-anchor="end" %s>%s</text>`+"\n", labelW-6, y+15, font, esc(row))
		x := float64(labelW)
		for j, v := range values[i] {
			if v <= 0 {
				continue
			}
			wd := v / scaleMax * plotW
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s %s: %s %s</title></rect>`+"\n",
				x, y+3, wd, rowH-6, Palette[j%len(Palette)], esc(row), esc(series[j]), num(v), unit)
			x += wd
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" %s>%s</text>`+"\n", x+4, y+15, font, num(sum(values[i])))
	}
	legend(&b, series, pos, h-legendH+4)
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// Histogram draws the distribution of values in bins equal-width bins, the
// individual values as a strip of ticks below, and the median as a line.
func Histogram(title, unit string, values []float64, bins int) []byte {
	w := labelW + plotW + rightPad
	h := top + 200 + 70
	var b bytes.Buffer
	header(&b, w, h, title)
	if len(values) == 0 || bins < 1 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" %s>no values</text>`+"\n", w/2-30, top+100, font)
		b.WriteString("</svg>\n")
		return b.Bytes()
	}
	vs := slices.Clone(values)
	slices.Sort(vs)
	scaleMax := niceCeil(vs[len(vs)-1])
	counts := make([]int, bins)
	for _, v := range vs {
		i := int(v / scaleMax * float64(bins))
		counts[min(max(i, 0), bins-1)]++
	}
	maxCount := slices.Max(counts)
	const plotH = 200
	x0, y0 := labelW, top+plotH
	// y axis: counts.
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`+"\n", x0, top, x0, y0)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end" %s>%d</text>`+"\n", x0-4, top+4, font, maxCount)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end" %s>0</text>`+"\n", x0-4, y0, font)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end" %s>count</text>`+"\n", x0-4, top+plotH/2, font)
	bw := float64(plotW) / float64(bins)
	for i, c := range counts {
		if c == 0 {
			continue
		}
		bh := float64(c) / float64(maxCount) * plotH
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s–%s %s: %d</title></rect>`+"\n",
			float64(x0)+float64(i)*bw+1, float64(y0)-bh, bw-2, bh, Palette[0],
			num(float64(i)*scaleMax/float64(bins)), num(float64(i+1)*scaleMax/float64(bins)), unit, c)
	}
	axis(&b, scaleMax, unit, y0, y0)
	// strip of the raw values, below the axis labels.
	sy := y0 + 34
	for _, v := range vs {
		x := float64(x0) + v/scaleMax*plotW
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"><title>%s %s</title></line>`+"\n", x, sy, x, sy+14, Palette[5], num(v), unit)
	}
	med := median(vs)
	mx := float64(x0) + med/scaleMax*plotW
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#000" stroke-dasharray="4 3"/>`+"\n", mx, top, mx, sy+14)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" %s>median %s %s (n=%d)</text>`+"\n", mx+4, top+12, font, num(med), unit, len(vs))
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func header(b *bytes.Buffer, w, h int, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", w, h, w, h)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="#fff"/>`+"\n", w, h)
	fmt.Fprintf(b, `<text x="%d" y="22" font-size="15" font-weight="bold" text-anchor="middle" %s>%s</text>`+"\n", w/2, font, esc(title))
}

// axis draws an x axis from 0 to scaleMax under the plot area, with a light
// grid from gridTop to y.
func axis(b *bytes.Buffer, scaleMax float64, unit string, gridTop, y int) {
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`+"\n", labelW, y, labelW+plotW, y)
	const ticks = 5
	for i := 0; i <= ticks; i++ {
		v := scaleMax * float64(i) / ticks
		x := float64(labelW) + float64(i)*plotW/ticks
		if gridTop < y {
			fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, gridTop, x, y)
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="11" text-anchor="middle" %s>%s</text>`+"\n", x, y+14, font, num(v))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="11" text-anchor="middle" %s>%s</text>`+"\n", labelW+plotW/2, y+28, font, esc(unit))
}

// legendLayout places legend entries left to right, wrapping at the plot's
// right edge; it returns each entry's (x, line) and the number of lines.
func legendLayout(series []string) ([][2]int, int) {
	pos := make([][2]int, len(series))
	x, line := labelW, 0
	for j, s := range series {
		wd := 16 + 7*len(s) + 16
		if x > labelW && x+wd > labelW+plotW+rightPad {
			x, line = labelW, line+1
		}
		pos[j] = [2]int{x, line}
		x += wd
	}
	return pos, line + 1
}

func legend(b *bytes.Buffer, series []string, pos [][2]int, y int) {
	for j, s := range series {
		x, ly := pos[j][0], y+20*pos[j][1]
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", x, ly, Palette[j%len(Palette)])
		fmt.Fprintf(b, `<text x="%d" y="%d" font-size="12" %s>%s</text>`+"\n", x+16, ly+11, font, esc(s))
	}
}

func sum(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		if x > 0 {
			t += x
		}
	}
	return t
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, for axis ends.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// num prints a value compactly: integers without decimals, others with one.
func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func esc(s string) string { return html.EscapeString(s) }

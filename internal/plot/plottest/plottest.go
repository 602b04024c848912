// Package plottest reads back what package plot writes, for tests: the text
// of an SVG figure (which must be well-formed XML with an <svg> root) and of
// a PDF figure (which must have a PDF header and trailer).
package plottest

import (
	"bytes"
	"compress/zlib"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
)

// SVGText checks that b is one well-formed SVG document and returns the
// text of its <text> elements, one per line.
func SVGText(b []byte) (string, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	var out []string
	depth, inText, roots := 0, 0, 0
	var cur strings.Builder
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("not well-formed XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
				if t.Name.Local != "svg" {
					return "", fmt.Errorf("root element is <%s>, not <svg>", t.Name.Local)
				}
			}
			depth++
			if t.Name.Local == "text" {
				inText++
			}
		case xml.EndElement:
			depth--
			if t.Name.Local == "text" {
				inText--
				if inText == 0 {
					out = append(out, cur.String())
					cur.Reset()
				}
			}
		case xml.CharData:
			if inText > 0 {
				cur.Write(t)
			}
		}
	}
	if roots != 1 {
		return "", fmt.Errorf("%d root elements, want one <svg>", roots)
	}
	return strings.Join(out, "\n"), nil
}

var streamRE = regexp.MustCompile(`(?s)stream\r?\n(.*?)\r?\nendstream`)

// PDFText checks that b looks like a whole PDF (header, trailer) and returns
// its inflated content streams, where each drawn string appears as a PDF
// string literal (PDFString).
func PDFText(b []byte) (string, error) {
	if !bytes.HasPrefix(b, []byte("%PDF-")) {
		return "", errors.New("no %PDF- header")
	}
	if !bytes.Contains(b[max(0, len(b)-64):], []byte("%%EOF")) {
		return "", errors.New("no %%EOF trailer")
	}
	var out strings.Builder
	n := 0
	for _, m := range streamRE.FindAllSubmatch(b, -1) {
		zr, err := zlib.NewReader(bytes.NewReader(m[1]))
		if err != nil {
			continue // not a Flate stream (an image, say)
		}
		d, err := io.ReadAll(zr)
		if err != nil || !bytes.Contains(d, []byte("Tj")) {
			continue // an embedded font, not a page
		}
		out.Write(d)
		n++
	}
	if n == 0 {
		return "", errors.New("no page content with text")
	}
	return out.String(), nil
}

// PDFString is s as a PDF page holds it: in code page 1252 ("?" for what it
// lacks), with the string literal's escapes.
func PDFString(s string) string {
	var b strings.Builder
	for _, r := range s {
		c := byte('?')
		if r < utf8.RuneSelf {
			c = byte(r)
		} else if e, ok := charmap.Windows1252.EncodeRune(r); ok {
			c = e
		}
		if c == '(' || c == ')' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

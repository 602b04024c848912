package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/e-mission/upc/services/pm/query"
)

// Doc is one document to insert: decoded, or kept as the JSON a client sent.
//
// Decoding a document into a map and encoding it again costs far more than
// sealing and storing it, and most documents need neither: a plain document
// (see ParseDoc) is stored as its compact bytes, with its index fields read by
// one scan. Anything else takes the general path of decode and normalize.
type Doc struct {
	m    map[string]any
	raw  []byte // compact JSON object; nil when m is set
	info docInfo
}

// ErrNotDocument is ParseDoc's answer to JSON that is not an object.
var ErrNotDocument = errors.New("must be a document (JSON object)")

// MapDoc is a decoded (and normalized) document.
func MapDoc(m map[string]any) Doc { return Doc{m: m} }

// ParseDoc reads one document from JSON. A plain document (field names that
// are not empty, hold no '$', '.' or escape; an _id that, if present, is a
// string without escapes) is kept as bytes; any other is decoded and
// normalized as query.Normalize does, which may refuse it.
func ParseDoc(raw []byte) (Doc, error) {
	if info, ok := scanDoc(raw); ok {
		if info.spaced {
			var buf bytes.Buffer
			if err := json.Compact(&buf, raw); err != nil {
				return Doc{}, err
			}
			raw = buf.Bytes()
		}
		return Doc{raw: raw, info: info}, nil
	}
	m, err := decodeDoc(raw)
	if err != nil || m == nil {
		return Doc{}, ErrNotDocument
	}
	if _, err := query.Normalize(m, true); err != nil {
		return Doc{}, err
	}
	return Doc{m: m}, nil
}

// Key is the document's metadata.key when it is a string (its stream), else
// "".
func (d Doc) Key() string {
	if d.m == nil {
		return d.info.key
	}
	if md, ok := d.m["metadata"].(map[string]any); ok {
		if k, ok := md["key"].(string); ok {
			return k
		}
	}
	return ""
}

// ensureID gives the document a new ObjectID when it has no _id, and
// returns its _id (refused when it is an object or an array).
func (d *Doc) ensureID(now time.Time) (any, error) {
	if d.m == nil {
		if !d.info.hasID {
			d.info.id, d.info.hasID = NewObjectID(now), true
			d.raw = withID(d.raw, d.info.id)
		}
		return d.info.id, nil
	}
	id, ok := d.m["_id"]
	if !ok {
		id = NewObjectID(now)
		d.m["_id"] = id
	}
	switch id.(type) {
	case map[string]any:
		return nil, errors.New("_id cannot be an object")
	case []any:
		return nil, errors.New("_id cannot be an array")
	}
	return id, nil
}

// record is what a Doc is stored as: its JSON and its index tuple.
func (d *Doc) record(db, coll string) ([]byte, tuple, error) {
	if d.m == nil {
		return d.raw, d.info.tuple(db, coll), nil
	}
	raw, err := encodeDoc(d.m)
	if err != nil {
		return nil, tuple{}, fmt.Errorf("encode document: %w", err)
	}
	return raw, tupleFor(db, coll, d.m), nil
}

// docInfo is what one scan of a plain document finds.
type docInfo struct {
	id, key       string
	hasID         bool
	ts, wts       float64
	hasTs, hasWts bool
	invalid       bool // a top-level invalid field
	// tsOther and wtsOther: the field is there but neither a number nor
	// null (or its parent is an array): it does not sort as null.
	tsOther, wtsOther bool
	spaced            bool // whitespace outside strings: compact before storing
}

// withID returns raw with "_id": id as its first field.
func withID(raw []byte, id string) []byte {
	q := strconv.Quote(id)
	out := make([]byte, 0, len(raw)+len(q)+8)
	out = append(out, `{"_id":`...)
	out = append(out, q...)
	if rest := bytes.TrimSpace(raw[1:]); len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, raw[1:]...)
}

// scanDoc reads the index fields of a plain JSON object in one pass without
// building it. ok is false when the document needs the general path (see
// ParseDoc), including duplicate top-level names and malformed input.
func scanDoc(b []byte) (info docInfo, ok bool) {
	s := &scanner{b: b}
	s.ws()
	if !s.is('{') {
		return info, false
	}
	var seen [][]byte
	var seenSet map[string]bool // past a few names: a lookup instead of a scan of them
	ok = s.object(0, func(name []byte) bool {
		if seenSet != nil {
			if seenSet[string(name)] {
				return false
			}
			seenSet[string(name)] = true
		} else {
			for _, n := range seen {
				if bytes.Equal(n, name) {
					return false
				}
			}
			if seen = append(seen, name); len(seen) > 16 {
				seenSet = make(map[string]bool, 2*len(seen))
				for _, n := range seen {
					seenSet[string(n)] = true
				}
			}
		}
		switch string(name) {
		case "_id":
			v, isStr := s.plainString()
			if !isStr {
				return false
			}
			info.id, info.hasID = string(v), true
			return true
		case "invalid":
			info.invalid = true
		case "metadata", "data":
			md := string(name) == "metadata"
			if !s.is('{') {
				if s.is('[') {
					info.tsOther = info.tsOther || !md
					info.wtsOther = info.wtsOther || md
				}
				break
			}
			return s.object(1, func(field []byte) bool {
				switch {
				case md && string(field) == "key":
					info.key = ""
					if s.is('"') {
						v, isStr := s.plainString()
						if !isStr {
							return false
						}
						info.key = string(v)
						return true
					}
				case md && string(field) == "write_ts":
					info.wts, info.hasWts = 0, false
					if n, isNum := s.number(); isNum {
						info.wts, info.hasWts = n, true
						return true
					}
					info.wtsOther = !s.isNull()
				case !md && string(field) == "ts":
					info.ts, info.hasTs = 0, false
					if n, isNum := s.number(); isNum {
						info.ts, info.hasTs = n, true
						return true
					}
					info.tsOther = !s.isNull()
				}
				return s.value(2)
			})
		}
		return s.value(1)
	})
	s.ws()
	info.spaced = s.spaced
	return info, ok && s.i == len(s.b)
}

// scanner walks JSON bytes; every method reports false on anything it does
// not accept, which sends the document to the general path.
type scanner struct {
	b      []byte
	i      int
	spaced bool
	values int // values read so far (query.MaxValues bounds a document)
}

const maxScanDepth = 64

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.spaced = true
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) is(c byte) bool { return s.i < len(s.b) && s.b[s.i] == c }

// isNull reports whether the next value is null (without consuming it).
func (s *scanner) isNull() bool { return bytes.HasPrefix(s.b[s.i:], []byte("null")) }

// object reads {"name": value, ...}; field is called at each value and must
// consume it.
func (s *scanner) object(depth int, field func(name []byte) bool) bool {
	s.i++ // '{'
	s.ws()
	if s.is('}') {
		s.i++
		return true
	}
	for {
		s.ws()
		name, plain := s.plainString()
		if !plain || len(name) == 0 || name[0] == '$' || bytes.IndexByte(name, '.') >= 0 {
			return false
		}
		s.ws()
		if !s.is(':') {
			return false
		}
		s.i++
		s.ws()
		if !field(name) {
			return false
		}
		s.ws()
		switch {
		case s.is(','):
			s.i++
		case s.is('}'):
			s.i++
			return true
		default:
			return false
		}
	}
}

// plainString reads a string without escapes and returns its contents.
func (s *scanner) plainString() ([]byte, bool) {
	if !s.is('"') {
		return nil, false
	}
	start := s.i + 1
	ascii := true
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			// Invalid UTF-8 is not plain: the decoder reads it as U+FFFD,
			// so the index would hold other bytes than the document.
			if !ascii && !utf8.Valid(s.b[start:j]) {
				return nil, false
			}
			s.i = j + 1
			return s.b[start:j], true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, false
}

// str skips a string, escapes allowed.
func (s *scanner) str() bool {
	ascii := true
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(s.b[s.i+1:j]) { // see plainString
				return false
			}
			s.i = j + 1
			return true
		case c >= 0x80:
			ascii = false
		case c == '\\':
			j++
		case c < 0x20:
			return false
		}
	}
	return false
}

// number reads a number as query.Number would (false for one out of range).
func (s *scanner) number() (float64, bool) {
	start := s.i
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			s.i++
			continue
		}
		break
	}
	if s.i == start {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(s.b[start:s.i]), 64)
	if err != nil {
		s.i = start
		return 0, false
	}
	return f, !math.IsNaN(f)
}

// value skips any value, checking the field names of objects inside it.
func (s *scanner) value(depth int) bool {
	// Too deep or too many values: the general path refuses it, naming why.
	if s.values++; depth > maxScanDepth || s.values > query.MaxValues || s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth, func([]byte) bool { return s.value(depth + 1) })
	case c == '[':
		s.i++
		s.ws()
		if s.is(']') {
			s.i++
			return true
		}
		for {
			s.ws()
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			switch {
			case s.is(','):
				s.i++
			case s.is(']'):
				s.i++
				return true
			default:
				return false
			}
		}
	case c == '"':
		return s.str()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, isNum := s.number()
		return isNum
	}
	return false
}

func (s *scanner) literal(w string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(w)) {
		return false
	}
	s.i += len(w)
	return true
}

// SplitArray returns the elements of a JSON array that a decoder has already
// checked (json.RawMessage), without checking it again; ok is false when raw
// is not an array.
func SplitArray(raw []byte) (elems [][]byte, ok bool) {
	s := &scanner{b: raw}
	s.ws()
	if !s.is('[') {
		return nil, false
	}
	s.i++
	for {
		s.ws()
		if s.is(']') {
			return elems, len(elems) == 0
		}
		start := s.i
		if !s.skip() {
			return nil, false
		}
		elems = append(elems, raw[start:s.i])
		s.ws()
		switch {
		case s.is(','):
			s.i++
		case s.is(']'):
			return elems, true
		default:
			return nil, false
		}
	}
}

// skip passes over one value by counting brackets outside strings.
func (s *scanner) skip() bool {
	depth := 0
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			if !s.str() {
				return false
			}
			if depth == 0 {
				return true
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return true // the end of the enclosing array
			}
			depth--
			if depth == 0 {
				s.i++
				return true
			}
		case ',':
			if depth == 0 {
				return true
			}
		}
		s.i++
	}
	return depth == 0
}

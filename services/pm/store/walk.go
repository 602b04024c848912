package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/e-mission/upc/services/pm/query"
)

// A find sorted on data.ts or metadata.write_ts with a limit ("the latest
// entry") walks that field's sorted array from the right end and stops once
// the limit is met, instead of reading every match and sorting them: for a
// year of data, half a millisecond instead of two seconds.

// walkOrder returns the order a find's first sort key walks, with the
// record flags of a number and of null there; ok is false when the find is
// not one a walk answers.
func walkOrder(o FindOptions) (ord int, num, null uint8, ok bool) {
	if o.Limit <= 0 || len(o.Sort) == 0 {
		return 0, 0, 0, false
	}
	switch o.Sort[0].Path {
	case "data.ts":
		return ordTs, flagTs, flagTsNull, true
	case "metadata.write_ts":
		return ordWts, flagWts, flagWtsNull, true
	}
	return 0, 0, 0, false
}

// walk visits the live records of order o (ordTs or ordWts) in order, or in
// reverse with desc, merging the sorted array with the pending records,
// until fn returns false.
func (c *collection) walk(o int, desc bool, fn func(p int32) bool) {
	var pend []int32
	for _, p := range c.pending {
		if r := c.at(p); r.live() && r.inOrder(o) {
			pend = append(pend, p)
		}
	}
	c.sortIn(o, pend)
	a := c.sorted[o]
	before := func(x, y int32) bool { // x comes first in the walk
		d := comparePr(c.at(x).in(o), c.at(y).in(o))
		if desc {
			return d > 0
		}
		return d < 0
	}
	i, j, step := 0, 0, 1
	if desc {
		i, j, step = len(a)-1, len(pend)-1, -1
	}
	inA := func() bool { return i >= 0 && i < len(a) }
	inP := func() bool { return j >= 0 && j < len(pend) }
	for inA() || inP() {
		var p int32
		if inA() && (!inP() || before(a[i], pend[j])) {
			p, i = a[i], i+step
			if !c.at(p).live() {
				continue
			}
		} else {
			p, j = pend[j], j+step
		}
		if !fn(p) {
			return
		}
	}
}

// walkMatches returns, in natural order, a set of matches of f that holds
// the first Skip+Limit of the find's order: the matches met walking the
// field's numbers in order until Skip+Limit are found, plus those tied with
// the last; every match whose field is neither a number nor null (read and
// tested: the Sorter places them); and the matches whose field is missing or
// null when they sort first (ascending) or the numbers ran out. Sorting them
// with the find's Sorter then gives the answer. With raw, it reads no
// document and reports ok false unless the plan decides the filter and every
// record of the set has the field as a number. ok is false when the find is
// not one a walk answers.
func (s *Store) walkMatches(ctx context.Context, tx *bolt.Tx, c *collection, f *query.Filter, o FindOptions, raw bool) (out []match, ok bool, err error) {
	ord, num, null, ok := walkOrder(o)
	if !ok {
		return nil, false, nil
	}
	plan, planned := f.IndexPlan()
	if planned && plan.IDs != nil {
		planned = false
	}
	if raw && !planned {
		return nil, false, nil
	}
	keys := c.planKeys(&plan)
	decided := func(r *rec) bool {
		return planned && (!plan.NoInvalid || r.flags&flagInvalidKnown != 0)
	}
	if raw && !planned || raw && plan.NoInvalid && c.oldTuple > 0 {
		return nil, false, nil // some record needs its document read
	}
	desc := o.Sort[0].Desc
	read := 0
	// test reports whether the record at p matches, reading its document
	// unless raw.
	test := func(p int32) (match, bool, error) {
		r := c.at(p)
		if decided(r) && !r.fits(&plan, keys) {
			return match{}, false, nil
		}
		if raw {
			return match{p: p}, true, nil
		}
		if read++; read%cancelEvery == 0 && ctx.Err() != nil {
			return match{}, false, fmt.Errorf("%w: %w", ErrCanceled, context.Cause(ctx))
		}
		doc, err := s.readDoc(tx, r.id)
		if err != nil {
			return match{}, false, err
		}
		return match{p, doc}, decided(r) || f.Match(doc), nil
	}
	// others adds the matches among the live records without a number in
	// the field: those not null, and with nulls those null too. Raw, any
	// such match makes the walk give up (ok false).
	odd := c.odd[0]
	if ord == ordWts {
		odd = c.odd[1]
	}
	others := func(nulls bool) (ok bool, err error) {
		if !nulls && odd == 0 {
			return true, nil // no record to read: skip the scan
		}
		for p := int32(0); p < int32(c.n); p++ {
			r := c.at(p)
			if !r.live() || r.flags&num != 0 || !nulls && r.flags&null != 0 {
				continue
			}
			m, ok, err := test(p)
			if err != nil {
				return false, err
			}
			if ok && raw {
				return false, nil
			}
			if ok {
				out = append(out, m)
			}
		}
		return true, nil
	}
	if ok, err := others(!desc); !ok || err != nil {
		return nil, false, err
	}
	need, found, last := o.Skip+o.Limit, int64(0), 0.0
	c.walk(ord, desc, func(p int32) bool {
		v := c.at(p).in(ord).v
		if found >= need && v != last {
			return false
		}
		var m match
		var ok bool
		if m, ok, err = test(p); err != nil {
			return false
		}
		if ok {
			out = append(out, m)
			found, last = found+1, v
		}
		return true
	})
	if err != nil {
		return nil, false, err
	}
	if desc && found < need {
		// The numbers ran out: the nulls come next.
		out = slices.DeleteFunc(out, func(m match) bool { return c.at(m.p).flags&(num|null) == 0 })
		if ok, err := others(true); !ok || err != nil {
			return nil, false, err
		}
	}
	slices.SortFunc(out, func(a, b match) int { return cmp.Compare(c.at(a.p).seq, c.at(b.p).seq) })
	return out, true, nil
}

package groundtruth

import (
	"bufio"
	"fmt"
	"io"
)

func mark(ok bool) string {
	if ok {
		return "ok  "
	}
	return "FAIL"
}

// Write renders the report as text: one line per trip and per feature with
// its status, and under anything that failed the field, the expected and the
// actual value.
func (r Report) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	verdict := "PASS"
	if !r.OK() {
		verdict = fmt.Sprintf("FAIL (%d failed checks)", r.Failures())
	}
	fmt.Fprintf(bw, "%s comparison: %s\n", r.Mode, verdict)
	if r.Fuzz != nil {
		fmt.Fprintf(bw, "fuzz: %g m, %g s, ±%d points\n", r.Fuzz.Distance, r.Fuzz.Time, r.Fuzz.Count)
	}
	fmt.Fprintf(bw, "%s trips: want %d, got %d\n", mark(r.WantTrips == r.GotTrips), r.WantTrips, r.GotTrips)
	for _, t := range r.Trips {
		fmt.Fprintf(bw, "%s trip %d: %s\n", mark(t.OK()), t.Index, t.Want)
		if t.Got != t.Want {
			fmt.Fprintf(bw, "            got: %s\n", t.Got)
		}
		writeFailed(bw, "       ", t.Checks)
		for _, f := range t.Features {
			fmt.Fprintf(bw, "%s   %d %s: %s\n", mark(f.OK()), f.Index, f.Kind, f.Label)
			writeFailed(bw, "          ", f.Checks)
		}
	}
	if n := r.WantTrips - r.GotTrips; n > 0 {
		fmt.Fprintf(bw, "FAIL %d expected trips missing after trip %d\n", n, r.GotTrips-1)
	} else if n < 0 {
		fmt.Fprintf(bw, "FAIL %d extra trips after trip %d\n", -n, r.WantTrips-1)
	}
	return bw.Flush()
}

func writeFailed(w io.Writer, indent string, cs []Check) {
	for _, c := range cs {
		if !c.OK {
			fmt.Fprintf(w, "%s%s: want %s, got %s\n", indent, c.Field, c.Want, c.Got)
		}
	}
}

// FailedChecks lists up to n failed checks, one line each, in the order
// Write shows them ("trip 2: end_ts: want …, got …"), and a last line saying
// how many more there are.
func (r Report) FailedChecks(n int) []string {
	var out []string
	more := 0
	add := func(s string) {
		if len(out) < n {
			out = append(out, s)
		} else {
			more++
		}
	}
	if r.WantTrips != r.GotTrips {
		add(fmt.Sprintf("trips: want %d, got %d", r.WantTrips, r.GotTrips))
	}
	for _, t := range r.Trips {
		for _, c := range t.Checks {
			if !c.OK {
				add(fmt.Sprintf("trip %d: %s: want %s, got %s", t.Index, c.Field, c.Want, c.Got))
			}
		}
		for _, f := range t.Features {
			for _, c := range f.Checks {
				if !c.OK {
					add(fmt.Sprintf("trip %d %s %d: %s: want %s, got %s", t.Index, f.Kind, f.Index, c.Field, c.Want, c.Got))
				}
			}
		}
	}
	if more > 0 {
		out = append(out, fmt.Sprintf("… and %d more", more))
	}
	return out
}

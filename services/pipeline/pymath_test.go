package pipeline

import (
	"bufio"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestHaversineMatchesLibm compares with values printed by CPython (glibc libm):
// glibc ≥ 2.28 is not always correctly rounded either, so allow an ulp (a few for long distances).
func TestHaversineMatchesLibm(t *testing.T) {
	for _, path := range []string{"testdata/haversine_libm.txt", "/tmp/sc/hv.txt"} {
		f, err := os.Open(path)
		if err != nil {
			if path == "testdata/haversine_libm.txt" {
				t.Fatal(err)
			}
			continue
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		n, bad := 0, [4]int{}
		for s.Scan() {
			p := strings.Fields(s.Text())
			v := make([]float64, len(p))
			for i := range p {
				v[i], _ = strconv.ParseFloat(p[i], 64)
			}
			n++
			if got := Haversine(v[0], v[1], v[2], v[3]); math.Abs(got-v[4]) > 1e-15*v[4] {
				bad[0]++
				if bad[0] < 5 {
					t.Errorf("%s: haversine%v = %v, libm %v", path, v[:4], got, v[4])
				}
			}
			if d := v[2] - v[0]; math.Abs(d) <= 4 && math.Abs(pySin(d)-v[5]) > 2.3e-16*math.Abs(v[5]) {
				bad[1]++
			}
			if math.Abs(pyCos(v[1]/50)-v[6]) > 2.3e-16*v[6] {
				bad[2]++
			}
			if math.Abs(pyAtan2(abs(v[3]-v[1]), 1)-v[7]) > 2.3e-16*v[7] {
				bad[3]++
			}
		}
		if bad != [4]int{} {
			t.Errorf("%s: %d lines, mismatches (haversine, sin, cos, atan2) = %v", path, n, bad)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

package aggregator

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/dp"
	"github.com/e-mission/upc/internal/testskip"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/pm"
	pmapi "github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// The sum of users' noise shares, each drawn by the real count service (its
// HTTP handler, in process) answering from a real PM (encrypted store,
// in process) that holds no location, so every answer is 0 + the share: the
// totals must follow DLap(1/ε) (mean, variance and a χ² goodness of fit).
func TestDistributedSharesThroughCountServiceSumToDiscreteLaplace(t *testing.T) {
	if testing.Short() {
		testskip.Skip(t, "draws thousands of answers")
	}
	st, err := store.Open(t.TempDir(), store.Options{InitialBudget: 1e9, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	owner, svcSecret := access.NewToken(access.PrefixInstance), access.NewToken(access.PrefixInstance)
	pmSrv := httptest.NewServer(pm.New(st, slog.New(slog.DiscardHandler), pm.Options{MaxBody: 1 << 20,
		Access: access.Instance{SHA256: access.Hash(owner)}}).Handler())
	defer pmSrv.Close()
	ctx := context.Background()
	ownerPM := pmclient.New(pmSrv.URL, nil, pmclient.WithToken(owner))
	if err := ownerPM.Unseal(ctx, "distributed test key"); err != nil {
		t.Fatal(err)
	}
	// A count service shared by many users: each request carries the
	// user's grant.
	grant, err := ownerPM.IssueGrant(ctx, pmapi.GrantRequest{Service: "count", Read: []string{pmapi.Wildcard}, Spend: 1e9})
	if err != nil {
		t.Fatal(err)
	}
	csrv := count.NewServer(slog.New(slog.DiscardHandler), count.PMClients(nil))
	csrv.Access = access.Instance{SHA256: access.Hash(svcSecret)}
	cs := httptest.NewServer(csrv.Handler())
	defer cs.Close()

	const users, samples = 3, 1500
	q, err := ParseQuery(Count, []byte(`{"offset": 1, "alpha": 0.5, "start_ts": 0, "end_ts": 2000000000, "sel_region": null}`))
	if err != nil {
		t.Fatal(err)
	}
	eps, _ := q.Epsilon()
	sc, err := dp.ScaleFor(eps.Total, 1)
	if err != nil {
		t.Fatal(err)
	}
	c := &client.Client{User: "u", HTTP: &http.Client{}}
	totals := make([]int64, samples)
	for s := range totals {
		for u := range users {
			req := count.Request{PMAddress: pmSrv.URL, UUID: "u", Query: q.Count, QueryID: fmt.Sprintf("q-%d-%d", s, u), Grant: grant.Token}
			req.NoiseShare = &struct {
				Users int `json:"users"`
			}{Users: users}
			res, err := c.Count(ctx, api.Instance{Address: cs.URL, Secret: svcSecret}, req)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Success || !res.Noised || res.Results == nil {
				t.Fatalf("answer %+v: not a noised answer", res)
			}
			totals[s] += *res.Results
		}
	}
	mean, variance := 0.0, 0.0
	for _, x := range totals {
		mean += float64(x)
	}
	mean /= samples
	for _, x := range totals {
		variance += (float64(x) - mean) * (float64(x) - mean)
	}
	variance /= samples - 1
	want := dp.DiscreteLaplaceVariance(sc)
	// mean: 5 standard errors; variance: within 25% (≈ 4 standard errors of
	// the sample variance of a law of kurtosis ≈ 6 at this size).
	if se := math.Sqrt(want / samples); math.Abs(mean) > 5*se {
		t.Errorf("mean of the totals %.3f, want 0 ± %.3f", mean, 5*se)
	}
	if math.Abs(variance/want-1) > 0.25 {
		t.Errorf("variance of the totals %.3f, want %.3f (DLap of scale %.3f)", variance, want, sc.Float())
	}
	// χ² over the values with expected count ≥ 5, tails pooled.
	counts := map[int64]int{}
	for _, x := range totals {
		counts[x]++
	}
	k := int64(0)
	for float64(samples)*dp.DiscreteLaplacePMF(sc, k+1) >= 5 {
		k++
	}
	chi, cells, tail := 0.0, 0, 1.0
	for x := -k; x <= k; x++ {
		e := float64(samples) * dp.DiscreteLaplacePMF(sc, x)
		tail -= dp.DiscreteLaplacePMF(sc, x)
		chi += (float64(counts[x]) - e) * (float64(counts[x]) - e) / e
		cells++
	}
	out := 0
	for x, c := range counts {
		if x < -k || x > k {
			out += c
		}
	}
	if e := float64(samples) * tail; e > 0 {
		chi += (float64(out) - e) * (float64(out) - e) / e
		cells++
	}
	// Wilson–Hilferty 99.9% bound of χ² with cells−1 degrees of freedom.
	df := float64(cells - 1)
	bound := df * math.Pow(1-2/(9*df)+3.09*math.Sqrt(2/(9*df)), 3)
	if chi > bound {
		t.Errorf("χ² = %.1f over %d cells, above the 99.9%% bound %.1f: the totals are not DLap(%.3f)", chi, cells, bound, sc.Float())
	}
	t.Logf("%d totals of %d shares: mean %.3f, variance %.3f (want %.3f), χ² %.1f / bound %.1f over %d cells", samples, users, mean, variance, want, chi, bound, cells)
}

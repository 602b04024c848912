package aggregator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e-mission/upc/aggregator"
	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/harness/synth"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	pmapi "github.com/e-mission/upc/services/pm/api"
)

// recordingRouter remembers each user's PM so a fault can be injected.
type recordingRouter struct {
	client.Router
	mu  sync.Mutex
	pms map[string]api.Instance
}

func (r *recordingRouter) Launch(ctx context.Context, req api.LaunchRequest) (api.Instance, error) {
	inst, err := r.Router.Launch(ctx, req)
	if err == nil && req.Service == client.PMService {
		r.mu.Lock()
		r.pms[req.User] = inst
		r.mu.Unlock()
	}
	return inst, err
}

// killPMBeforeCount is a transport that, for one user, deletes that user's
// PM through the router just before the count service is asked, so the real
// count service fails to reach the real PM.
type killPMBeforeCount struct {
	rt     *recordingRouter
	victim string
	next   http.RoundTripper
}

func (k killPMBeforeCount) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/count_query") && req.Body != nil {
		body, _ := req.GetBody()
		var cr count.Request
		if json.NewDecoder(body).Decode(&cr) == nil && cr.UUID == k.victim {
			k.rt.mu.Lock()
			inst := k.rt.pms[cr.UUID]
			k.rt.mu.Unlock()
			if err := k.rt.Router.Delete(req.Context(), inst.ID); err != nil {
				return nil, fmt.Errorf("inject fault: %w", err)
			}
		}
	}
	return k.next.RoundTrip(req)
}

// TestIntegrationAggregateCount needs the Docker engine: the aggregator over
// six users through a real router (in process, local engine) and the real
// PM, pipeline and count images. Three synthetic users answer (the true
// total is known from their moved ground truths), one has spent its
// budget before the run (no_budget), one's PM vanishes before its count
// query (failed at query, the real count service's 502), and one file is not
// a day file (failed at upload). Then the same users again with distributed
// noise: the shares reach the aggregator, the exact total does not.
func TestIntegrationAggregateCount(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	m, err := synth.Generate(ctx, synth.Options{Source: realdata.DirT(t), Days: []string{"shankari_2015-08-23", "sunil_2016-07-20"},
		Users: 5, Seed: 2026, Out: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "user-0006"), []byte(`{"not": "a day"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	u1, u2 := m.Users[0], m.Users[1]
	lo, hi := u1.StartTs, u1.EndTs
	for _, u := range m.Users {
		lo, hi = min(lo, u.StartTs), max(hi, u.EndTs)
	}
	region, _ := json.Marshal(map[string]any{"geometry": map[string]any{"type": "MultiPolygon", "coordinates": []any{
		boxRing(u1.FirstStart, 0.005), boxRing(u2.FirstStart, 0.005)}}})
	q := count.Query{Offset: 100, Alpha: 0.05, StartTs: count.Timestamp(lo), EndTs: count.Timestamp(hi), SelRegion: region}
	known, err := synth.CountAnswers(dir, m, q)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("known answers: %v", known)
	// The answering users are 1-3; their known answers make the true total.
	wantTotal := known["user-0001"] + known["user-0002"] + known["user-0003"]
	if known["user-0001"] != 1 || known["user-0002"] != 1 {
		t.Fatalf("users 1 and 2 are not inside the boxes around their own first starts: %v", known)
	}

	tr := clienttest.StartRouter(t, "pm", "pipeline", "count")
	// The researcher's aggregator here plays every user's device too, so
	// it signs in as the router's admin, who may launch for anyone.
	rc := tr.Admin(t)
	rr := &recordingRouter{Router: client.NewRouter(rc), pms: map[string]api.Instance{}}
	seed := uint64(7)
	base := aggregator.Options{Router: rr, HTTP: tr.HTTP(), Query: aggregator.Query{Kind: aggregator.Count, Count: q}, Parallel: 3, Seed: &seed,
		Timeout: 8 * time.Minute, Progress: testWriter{t}}
	run := base
	run.RunID = fmt.Sprintf("it%d", time.Now().UnixNano())
	run.UserID = func(file string) string { return run.RunID + "-" + file }
	run.Key = func(file string) string { return "key of " + file }
	run.RevealTrueTotal = true
	victim := run.UserID("user-0005")
	run.HTTP = &http.Client{Transport: killPMBeforeCount{rt: rr, victim: victim, next: tr.HTTP().Transport}}

	// user-0004 spent its whole budget earlier.
	broke := &client.Client{Router: rr, User: run.UserID("user-0004"), HTTP: tr.HTTP()}
	inst, err := broke.LaunchPM(ctx, run.Key("user-0004"))
	if err != nil {
		t.Fatal(err)
	}
	digest, err := pmapi.QuestionDigest("test", "an earlier question")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := broke.PM(inst.Address).Spend(ctx, pmapi.SpendRequest{PrivacyCost: 1, QueryID: "earlier", Service: "test", Question: digest}); err != nil || !r.Success {
		t.Fatalf("spend the budget: %+v, %v", r, err)
	}
	if err := broke.Delete(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}

	files, err := aggregator.DayFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 6 {
		t.Fatalf("day files %v: want 6 (the manifest and ground truths skipped)", files)
	}
	res, err := aggregator.Run(ctx, files, run)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := res.JSON()
	t.Logf("result:\n%s", j)
	want := map[string]struct{ status, phase, why string }{
		"user-0001": {aggregator.Answered, "", ""},
		"user-0002": {aggregator.Answered, "", ""},
		"user-0003": {aggregator.Answered, "", ""},
		"user-0004": {aggregator.NoBudget, aggregator.PhaseQuery, "budget"},
		"user-0005": {aggregator.Failed, aggregator.PhaseQuery, "502"},
		"user-0006": {aggregator.Failed, aggregator.PhaseUpload, "JSON array"},
	}
	for _, u := range res.PerUser {
		w := want[u.File]
		if u.Status != w.status || u.Phase != w.phase || !strings.Contains(u.Error, w.why) {
			t.Errorf("%s: status %s at %q (%s), want %s at %q (%q)", u.File, u.Status, u.Phase, u.Error, w.status, w.phase, w.why)
		}
		if u.Status == aggregator.Answered && (u.Trips == 0 || u.Entries == 0) {
			t.Errorf("%s answered with %d entries and %d trips", u.File, u.Entries, u.Trips)
		}
	}
	if res.NumberParticipants != 3 || res.NoBudget != 1 || res.Failed != 2 {
		t.Errorf("participants %d, no budget %d, failed %d; want 3, 1, 2", res.NumberParticipants, res.NoBudget, res.Failed)
	}
	if res.ActualTotal != wantTotal {
		t.Errorf("actual total %v, want %d (the synthetic users' known answers)", res.ActualTotal, wantTotal)
	}
	if n, ok := res.NoisyTotal.(int64); !ok || n < 0 {
		t.Errorf("noisy total %v is not a count", res.NoisyTotal)
	}
	if e, _ := q.Cost(); res.Epsilon != e {
		t.Errorf("ε %v, want %v", res.Epsilon, e)
	}
	for _, u := range res.PerUser {
		if u.File != "user-0005" && u.CleanupError != "" {
			t.Errorf("%s: cleanup failed: %s", u.File, u.CleanupError)
		}
	}

	// Distributed noise over the three good users (fresh ids): every answer
	// is noised by its service, and the exact total is not known.
	dist := base
	dist.RunID = fmt.Sprintf("itd%d", time.Now().UnixNano())
	dist.Noise = aggregator.Distributed
	dist.RevealTrueTotal = true
	res2, err := aggregator.Run(ctx, files[:3], dist)
	if err != nil {
		t.Fatal(err)
	}
	j, _ = res2.JSON()
	t.Logf("distributed result:\n%s", j)
	if res2.NumberParticipants != 3 || res2.ActualTotal != nil || res2.TrueTotalNote == "" || res2.Noise != aggregator.Distributed {
		t.Errorf("distributed run: %d participants, actual total %v (%q), noise %s", res2.NumberParticipants, res2.ActualTotal, res2.TrueTotalNote, res2.Noise)
	}
}

func boxRing(c [2]float64, d float64) [][][2]float64 {
	lon, lat := c[0], c[1]
	return [][][2]float64{{{lon - d, lat - d}, {lon + d, lat - d}, {lon + d, lat + d}, {lon - d, lat + d}, {lon - d, lat - d}}}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

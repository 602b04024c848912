package count

import (
	"context"
	"encoding/json"
	"math"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/e-mission/upc/services/pm/store"
)

// Each way a researcher tried to get more than the budget allows, as a named
// test over HTTP: the count service in front of a real PM.

func cheatServer(t *testing.T) *httptest.Server {
	t.Helper()
	return serve(t)
}

const window = `"start_ts": 1440658800, "end_ts": 1440745200`

// One query id, many questions: three windows under one id are not three
// answers for one charge; the first is answered, the others refused (409).
func TestCheatOneQueryIDManyQuestions(t *testing.T) {
	c := startPM(t, 1)
	uploadRecreated(t, c, "shankari_2015-aug-27")
	srv := cheatServer(t)
	for i, w := range []string{window, `"start_ts": 1440745200, "end_ts": 1440831600`, `"start_ts": 0, "end_ts": 2e9`} {
		code, got := postJSON(t, srv.URL+"/v1/count_query", `{`+pmFields(t, c)+`, "uuid": "u", "query_id": "one-id",
		  "query": {"offset": 100, "alpha": 0.05, `+w+`, "sel_region": {"geometry": `+home+`}}}`)
		switch {
		case i == 0 && (code != 200 || !strings.Contains(got, `"success":true`)):
			t.Fatalf("first question: %d %s", code, got)
		case i > 0 && (code != 409 || !strings.Contains(got, "another question")):
			t.Errorf("question %d under the same id: %d %s, want 409", i+1, code, got)
		}
	}
	l, _ := c.Ledger(context.Background())
	if math.Abs(l.Spent-0.029957322735539909) > 1e-12 {
		t.Errorf("spent %v, want one charge", l.Spent)
	}
}

// Free and nearly free answers: a cost below the least ε, or one that
// overflows, is refused before anything is charged; at zero balance nothing
// is answered.
func TestCheatFreeAnswers(t *testing.T) {
	c := startPM(t, 0.05)
	uploadRecreated(t, c, "shankari_2015-aug-27")
	srv := cheatServer(t)
	ask := func(q string) (int, string) {
		return postJSON(t, srv.URL+"/count_query", `{`+pmFields(t, c)+`, "uuid": "u", "query": `+q+`}`)
	}
	for name, q := range map[string]string{
		"alpha 0.9999999999": `{"offset": 100, "alpha": 0.9999999999, ` + window + `, "sel_region": null}`,
		"offset 1e-320":      `{"offset": 1e-320, "alpha": 0.05, ` + window + `, "sel_region": null}`,
	} {
		if code, got := ask(q); code != 400 {
			t.Errorf("%s: %d %s, want 400", name, code, got)
		}
	}
	if code, got := ask(`{"offset": 100, "alpha": 0.05, ` + window + `, "sel_region": null}`); code != 200 || !strings.Contains(got, `"success":true`) {
		t.Fatalf("a paid query: %d %s", code, got)
	}
	// 0.02 left, each query costs 0.03: nothing more is answered.
	if code, got := ask(`{"offset": 100, "alpha": 0.05, ` + window + `, "sel_region": null}`); code != 200 || got != `{"success":false}` {
		t.Errorf("beyond the balance: %d %s", code, got)
	}
	l, _ := c.Ledger(context.Background())
	if len(l.Entries) != 2 || l.Entries[0].Kind != "spend" || l.Entries[1].Kind != "denied" {
		t.Errorf("ledger %+v: the refused questions must charge nothing", l.Entries)
	}
}

// Thinned noise: claiming a billion participants buys no less noise than the
// owner's policy allows. With a policy of 2, answers carry a visible share.
func TestCheatThinnedNoise(t *testing.T) {
	c := startPMWith(t, store.Options{InitialBudget: 1000, MaxParticipants: 2})
	srv := cheatServer(t)
	noised := 0
	for range 100 {
		code, got := postJSON(t, srv.URL+"/v1/count_query", `{`+pmFields(t, c)+`, "uuid": "u", "noise_share": {"users": 1000000000},
		  "query": {"offset": 1, "alpha": 0.5, `+window+`, "sel_region": null}}`)
		var out struct {
			Success, Noised bool
			Results         *int64
		}
		if err := json.Unmarshal([]byte(got), &out); err != nil || code != 200 || !out.Success || !out.Noised || out.Results == nil {
			t.Fatalf("answer %d %s", code, got)
		}
		if *out.Results != 0 { // no document: the exact answer is 0
			noised++
		}
	}
	// A share for 2 participants of DLap(1/ln 2) is non-zero about half the
	// time; one for a billion almost never.
	if noised < 25 {
		t.Errorf("%d of 100 answers carried noise", noised)
	}
	l, _ := c.Ledger(context.Background())
	if p := l.Entries[0].Participants; p != 2 {
		t.Errorf("the ledger records %d participants, want the policy's 2", p)
	}
}

// A retried question gets the same noise: retries cannot average it away.
func TestCheatAveragingRetries(t *testing.T) {
	c := startPM(t, 1)
	srv := cheatServer(t)
	var first string
	for i := range 5 {
		code, got := postJSON(t, srv.URL+"/v1/count_query", `{`+pmFields(t, c)+`, "uuid": "u", "query_id": "again", "noise_share": {"users": 2},
		  "query": {"offset": 1, "alpha": 0.5, `+window+`, "sel_region": null}}`)
		if code != 200 {
			t.Fatalf("answer %d %s", code, got)
		}
		if i == 0 {
			first = got
		} else if got != first {
			t.Fatalf("retry %d answered %s, the first %s", i, got, first)
		}
	}
}

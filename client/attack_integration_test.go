package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/internal/testskip"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	pmapi "github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// TestIntegrationAttacks attacks user A's cloud, on the real Docker engine
// with the real images, as the other parties of the threat model would
// (docs/security.md): an anonymous neighbour, a caller with a made-up
// token, user B with their own valid identity, PM and grants, and a
// researcher. Every attempt must be refused, and at the end A's data,
// budget and instances must be as A left them.
func TestIntegrationAttacks(t *testing.T) {
	if testing.Short() {
		testskip.Skip(t, "needs the Docker engine")
	}
	tr := clienttest.StartRouter(t, "pm", "count")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	alice, bob := "alice-"+suffix(), "bob-"+suffix()
	aliceRC := tr.Client(t, tr.AddUser(t, alice, api.RoleUser))
	bobTok := tr.AddUser(t, bob, api.RoleUser)
	bobRC := tr.Client(t, bobTok)
	ritaRC := tr.Client(t, tr.AddUser(t, "rita-"+suffix(), api.RoleResearcher))
	carolRC := tr.Client(t, tr.AddUser(t, "carol-"+suffix(), api.RoleUser))

	// A's cloud: a PM with a real day in it, and their budget untouched.
	a := &client.Client{Router: client.NewRouter(aliceRC), User: alice, HTTP: tr.HTTP()}
	aPM, err := a.LaunchPM(ctx, "alice's own key")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := client.LoadDay(filepath.Join(realdata.DirT(t), "shankari_2015-08-23"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Upload(ctx, aPM.Address, entries[:200]); err != nil {
		t.Fatal(err)
	}
	before := snapshot(ctx, t, a, aPM)

	// B's own cloud, whose credentials B will try on A's.
	b := &client.Client{Router: client.NewRouter(bobRC), User: bob, HTTP: tr.HTTP()}
	bPM, err := b.LaunchPM(ctx, "bob's key")
	if err != nil {
		t.Fatal(err)
	}
	bGrant, err := b.PM(bPM.Address).IssueGrant(ctx, b.GrantRequest(client.CountService))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("router refuses the anonymous and made-up tokens", func(t *testing.T) {
		for _, tok := range []string{"", "upcu_" + strings.Repeat("A", 43), "Basic x"} {
			for _, c := range []struct{ method, path, body string }{
				{"GET", "/v1/instances", ""},
				{"POST", "/v1/instances", `{"service":"pm","user":"` + alice + `"}`},
				{"GET", "/v1/instances/" + aPM.ID, ""},
				{"POST", "/v1/instances/" + aPM.ID + "/pause", ""},
				{"POST", "/v1/instances/" + aPM.ID + "/resume", ""},
				{"DELETE", "/v1/instances/" + aPM.ID, ""},
				{"POST", "/v1/clear", ""},
				{"POST", "/v1/networks", ""},
				{"GET", "/v1/users", ""},
				{"POST", "/v1/users", `{"name":"mallory","role":"admin"}`},
				{"GET", "/v1/whoami", ""},
				{"GET", "/v1/storage/" + alice, ""},
				{"DELETE", "/v1/storage/" + alice, ""},
				{"POST", "/service_request", `{"service":"PM"}`},
				{"POST", "/kill", `{"address":"` + aPM.Address + `"}`},
				{"POST", "/pause", `{"address":"` + aPM.Address + `"}`},
				{"POST", "/clear_containers", ""},
			} {
				if code := call(t, tr.RouterHTTP(), c.method, tr.URL+c.path, tok, c.body); code != http.StatusUnauthorized {
					t.Errorf("%s %s with token %.8q: %d, want 401", c.method, c.path, tok, code)
				}
			}
		}
	})

	t.Run("B cannot act on A's instances through the router", func(t *testing.T) {
		for name, op := range map[string]func() error{
			"get":    func() error { _, err := bobRC.Get(ctx, aPM.ID); return err },
			"pause":  func() error { _, err := bobRC.Pause(ctx, aPM.ID); return err },
			"resume": func() error { _, err := bobRC.Resume(ctx, aPM.ID); return err },
			"delete": func() error { return bobRC.Delete(ctx, aPM.ID) },
			"clear":  func() error { _, err := bobRC.Clear(ctx); return err },
			"networks": func() error {
				_, err := bobRC.SetupNetworks(ctx)
				return err
			},
			"list A's stored data":  func() error { _, err := bobRC.Storage(ctx, alice); return err },
			"erase A's stored data": func() error { _, err := bobRC.Erase(ctx, alice); return err },
			"add user":              func() error { _, err := bobRC.AddUser(ctx, "mallory", api.RoleAdmin); return err },
			"list users":            func() error { _, err := bobRC.Users(ctx); return err },
			"launch a pm for A":     func() error { _, err := bobRC.Launch(ctx, "pm", alice); return err },
			"bind count to A's pm without a grant": func() error {
				_, err := bobRC.LaunchWith(ctx, api.LaunchRequest{Service: "count", User: bob, PM: aPM.ID})
				return err
			},
			"bind count to A's pm with B's grant": func() error {
				_, err := bobRC.LaunchWith(ctx, api.LaunchRequest{Service: "count", User: bob, PM: aPM.ID, Grant: bGrant.Token})
				return err
			},
		} {
			if code := statusOf(op()); code != http.StatusForbidden && code != http.StatusBadRequest {
				t.Errorf("B %s: %d, want a refusal (403)", name, code)
			}
		}
		for _, p := range []string{"/kill", "/pause"} {
			if code := call(t, tr.RouterHTTP(), "POST", tr.URL+p, bobTok, `{"address":"`+aPM.Address+`"}`); code != http.StatusForbidden {
				t.Errorf("B %s A's pm by address: %d, want 403", p, code)
			}
		}
		ins, err := bobRC.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range ins {
			if in.User == alice || in.ID == aPM.ID {
				t.Errorf("B's list shows A's instance %s", in.ID)
			}
		}
		if _, err := ritaRC.Launch(ctx, "pm", alice); statusOf(err) != http.StatusForbidden {
			t.Errorf("a researcher launching a PM: %v, want 403", err)
		}
	})

	t.Run("A's PM answers neither anyone nor B", func(t *testing.T) {
		find := `{"stage_name":"usercache","filter":{}}`
		for _, c := range []struct{ tok, who string }{{"", "anonymous"}, {b.PMSecret, "B's pm secret"},
			{bGrant.Token, "B's grant"}, {"upcs_" + strings.Repeat("x", 43), "a made-up secret"}} {
			want := http.StatusForbidden
			if c.tok == "" {
				want = http.StatusUnauthorized
			}
			for _, p := range []struct{ method, path, body string }{
				{"POST", pmapi.PathFind, find},
				{"POST", pmapi.PathCount, find},
				{"POST", pmapi.PathInsert, `{"stage_name":"usercache","document":{"metadata":{"key":"x"}}}`},
				{"POST", pmapi.PathDelete, find},
				{"POST", pmapi.PathBudget, `{"privacy_cost":0.5}`},
				{"GET", pmapi.PathBudgetLedger, ""},
				{"POST", pmapi.PathKey, `{"key":"mallory's key"}`},
				{"POST", pmapi.PathGrants, `{"service":"count","read":["*"],"spend":1}`},
				{"GET", pmapi.PathGrants, ""},
			} {
				if code := call(t, tr.HTTP(), p.method, aPM.Address+p.path, c.tok, p.body); code != want {
					t.Errorf("%s: %s %s at A's pm: %d, want %d", c.who, p.method, p.path, code, want)
				}
			}
		}
	})

	t.Run("a grant does what it says and nothing more", func(t *testing.T) {
		g, err := a.PM(aPM.Address).IssueGrant(ctx, pmapi.GrantRequest{Service: "count", Read: []string{"nothing/here"}, Spend: 0.1, TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		pg := pmclient.New(aPM.Address, tr.HTTP(), pmclient.WithToken(g.Token))
		docs, err := pg.Find(ctx, pmclient.FindRequest{StageName: pmapi.Usercache})
		if err != nil || len(docs) != 0 {
			t.Errorf("a grant for another stream read %d of A's documents (err %v)", len(docs), err)
		}
		if _, err := pg.InsertOne(ctx, pmapi.DefaultDatabase, pmapi.Usercache, map[string]any{"metadata": map[string]any{"key": "nothing/here"}}); statusOf(err) != http.StatusForbidden {
			t.Errorf("a read-only grant inserting: %v, want 403", err)
		}
		if _, err := pg.Spend(ctx, pmapi.SpendRequest{PrivacyCost: 0.5, QueryID: "over-the-cap", Service: "count", Question: strings.Repeat("0", 64)}); statusOf(err) != http.StatusForbidden {
			t.Errorf("a spend over the grant's cap: %v, want 403", err)
		}
		for what, err := range map[string]error{
			"ledger": func() error { _, err := pg.Ledger(ctx); return err }(),
			"grants": func() error { _, err := pg.IssueGrant(ctx, pmapi.GrantRequest{Service: "count", Spend: 1}); return err }(),
			"claim":  pg.Unseal(ctx, "mallory's key"),
		} {
			if statusOf(err) != http.StatusForbidden {
				t.Errorf("a grant's bearer asking for the %s: %v, want 403", what, err)
			}
		}
		if err := a.PM(aPM.Address).RevokeGrant(ctx, g.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := pg.CheckGrant(ctx); statusOf(err) != http.StatusForbidden {
			t.Errorf("a revoked grant: %v, want 403", err)
		}
		short, err := a.PM(aPM.Address).IssueGrant(ctx, pmapi.GrantRequest{Service: "count", Read: []string{"*"}, TTL: "1s"})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		if _, err := pmclient.New(aPM.Address, tr.HTTP(), pmclient.WithToken(short.Token)).Find(ctx, pmclient.FindRequest{StageName: pmapi.Usercache}); statusOf(err) != http.StatusForbidden {
			t.Errorf("an expired grant: %v, want 403", err)
		}
	})

	t.Run("B's count service cannot reach A's PM", func(t *testing.T) {
		err := b.WithService(ctx, client.CountService, bPM, func(svc api.Instance) error {
			q := count.Query{Offset: 100, Alpha: 0.05, StartTs: 0, EndTs: count.Timestamp(time.Now().Unix()),
				SelRegion: json.RawMessage(`{"geometry":{"type":"Polygon","coordinates":[[[-180,-90],[180,-90],[180,90],[-180,90],[-180,-90]]]}}`)}
			if _, err := b.Count(ctx, svc, count.Request{PMAddress: aPM.Address, UUID: alice, Query: q, QueryID: "steal"}); statusOf(err) != http.StatusForbidden {
				t.Errorf("B's bound count naming A's pm: %v, want 403", err)
			}
			if code := call(t, tr.HTTP(), "POST", svc.Address+"/v1/count_query", "", `{}`); code != http.StatusUnauthorized {
				t.Errorf("B's count service without its secret: %d, want 401", code)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("nobody claims a fresh PM before its owner", func(t *testing.T) {
		// C launches a PM; anyone, A with her own PM's secret, and B with
		// his grant race to set its key before C does.
		fresh, err := carolRC.LaunchWith(ctx, api.LaunchRequest{Service: "pm"})
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{"", a.PMSecret, bGrant.Token} {
			if code := call(t, tr.HTTP(), "POST", fresh.Address+pmapi.PathKey, tok, `{"key":"mallory's key"}`); code != http.StatusUnauthorized && code != http.StatusForbidden {
				t.Errorf("claiming C's fresh pm with %.8q: %d, want 401 or 403", tok, code)
			}
		}
		if err := pmclient.New(fresh.Address, tr.HTTP(), pmclient.WithToken(fresh.Secret)).Unseal(ctx, "carol's key"); err != nil {
			t.Errorf("C claiming her own fresh pm after the attempts: %v", err)
		}
	})

	// A's cloud is as A left it.
	after := snapshot(ctx, t, a, aPM)
	if after != before {
		t.Errorf("A's cloud changed under attack: before %+v, after %+v", before, after)
	}
	if got, err := aliceRC.Get(ctx, aPM.ID); err != nil || got.State != "running" {
		t.Errorf("A's pm after the attacks: %+v, %v", got, err)
	}
}

type cloudState struct {
	Docs      int
	Remaining float64
	Entries   int
}

func snapshot(ctx context.Context, t *testing.T, c *client.Client, pm api.Instance) cloudState {
	t.Helper()
	docs, err := c.Download(ctx, pm.Address, client.DownloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.PM(pm.Address).Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return cloudState{Docs: len(docs), Remaining: l.Remaining, Entries: len(l.Entries)}
}

// call sends one request bearing tok (none when empty) and returns the
// status.
func call(t *testing.T, hc *http.Client, method, url, tok, body string) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case strings.HasPrefix(tok, "Basic "):
		req.Header.Set("Authorization", tok)
	case tok != "":
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// statusOf is the HTTP status of a client error (0 for nil or none).
func statusOf(err error) int {
	var se *httpx.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func suffix() string { return time.Now().Format("150405.000000")[7:] }

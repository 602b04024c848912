package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	mnetwork "github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/internal/tcsetup"
	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pipeline/pmstore"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

func TestMain(m *testing.M) {
	// The test removes what it makes (see tcsetup).
	if err := tcsetup.Configure(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func startContainer(t *testing.T, ctx context.Context, image, alias string, nw *testcontainers.DockerNetwork, env map[string]string) testcontainers.Container {
	t.Helper()
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        image,
			Name:         fmt.Sprintf("upc-test-%s-%d", alias, time.Now().UnixNano()),
			Env:          env,
			Labels:       map[string]string{"upc.test": "1"},
			ExposedPorts: []string{"8080/tcp"},
			HostConfigModifier: func(hc *container.HostConfig) {
				hc.PortBindings = mnetwork.PortMap{mnetwork.MustParsePort("8080/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: "0"}}}
			},
			WaitingFor: wait.ForHTTP("/healthz").WithPort("8080/tcp").WithStartupTimeout(60 * time.Second).WithPollInterval(50 * time.Millisecond),
		},
		Started: true,
	}
	if err := tcnetwork.WithNetwork([]string{alias}, nw).Customize(&req); err != nil {
		t.Fatal(err)
	}
	c, err := testcontainers.GenericContainer(ctx, req)
	if c != nil {
		t.Cleanup(func() { c.Terminate(context.Background()) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func hostURL(t *testing.T, ctx context.Context, c testcontainers.Container) string {
	t.Helper()
	p, err := c.MappedPort(ctx, "8080/tcp")
	if err != nil {
		t.Fatal(err)
	}
	return "http://127.0.0.1:" + p.Port()
}

// TestIntegrationDockerServices runs the FROM scratch images upc/pm,
// upc/metrics and upc/count on a network of their own on the real engine:
// the raw aug-27 day goes into the PM, the pipeline runs over it, then the
// metrics and count containers answer the original requests, reaching the PM
// by its name on the network as they would in a user's cloud; both stop
// gracefully on SIGTERM. Needs Docker.
func TestIntegrationDockerServices(t *testing.T) {
	m := imagestest.Require(t, "pm", "metrics", "count")
	ctx := context.Background()
	nw, err := tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{"upc.test": "1"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nw.Remove(context.Background()) })
	// Each instance has its secret, as the router makes them; the services
	// are bound to the user's PM (its name on the network) with a grant
	// its owner issued.
	owner, secret := access.NewToken(access.PrefixInstance), access.NewToken(access.PrefixInstance)
	pmC := startContainer(t, ctx, m.Images["pm"].ID, "pm", nw, map[string]string{"UPC_PM_KDF_MEMORY_MIB": "8", "UPC_PM_BUDGET": "1.0",
		access.EnvSHA256: access.Hash(owner)})
	pm := pmclient.New(hostURL(t, ctx, pmC), nil, pmclient.WithToken(owner))
	if err := pm.Unseal(ctx, "docker-test-key"); err != nil {
		t.Fatal(err)
	}
	const pmAddr = "http://pm:8080"
	bound := func(service string, read ...string) map[string]string {
		g, err := pm.IssueGrant(ctx, api.GrantRequest{Service: service, Read: read, Spend: 1})
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{access.EnvSHA256: access.Hash(secret), access.EnvPMAddress: pmAddr, access.EnvPMGrant: g.Token}
	}
	metricsC := startContainer(t, ctx, m.Images["metrics"].ID, "metrics", nw, bound("metrics", "analysis/cleaned_section"))
	countC := startContainer(t, ctx, m.Images["count"].ID, "count", nw, bound("count", "analysis/recreated_location"))
	f, err := realdata.Open(filepath.Join(realdata.DirT(t), "shankari_2015-aug-27"))
	if err != nil {
		t.Fatal(err)
	}
	es, err := pipeline.ReadEntries(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i := range es {
		es[i].UserID = "u"
	}
	st := pmstore.New(pm, "u")
	if err := st.Insert(ctx, pipeline.Timeseries, es); err != nil {
		t.Fatal(err)
	}
	if err := (&pipeline.Run{Store: st, UserID: "u", Seed: pipeline.DefaultSeed}).Execute(ctx); err != nil {
		t.Fatal(err)
	}

	send := func(url, token, body string) (int, string) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(bytes.TrimSpace(b))
	}
	post := func(url, body string) string {
		code, b := send(url, secret, body)
		if code != 200 {
			t.Fatalf("%s: %d %s", url, code, b)
		}
		return b
	}
	// Refused: no secret, a wrong one, the owner's PM secret, another PM.
	for _, c := range []struct {
		token, body string
		want        int
	}{
		{"", `{"uuid": "u"}`, 401},
		{access.NewToken(access.PrefixInstance), `{"uuid": "u"}`, 403},
		{owner, `{"uuid": "u"}`, 403},
		{secret, `{"pm_address": "http://other-pm:8080", "uuid": "u", "query": {"offset": 100, "alpha": 0.05, "start_ts": 1, "end_ts": 2}}`, 403},
	} {
		if code, b := send(hostURL(t, ctx, countC)+"/count_query", c.token, c.body); code != c.want {
			t.Errorf("count bearing %.8s: %d %s, want %d", c.token, code, b, c.want)
		}
	}
	// The address the services use is the PM's name on the network.
	got := post(hostURL(t, ctx, metricsC)+"/metrics/local_date", `{"pm_address": "`+pmAddr+`", "uuid": "u",
	 "start_time": {"year": 2015, "month": 8, "day": 27, "timezone": "America/Los_Angeles"},
	 "end_time": {"year": 2015, "month": 8, "day": 28, "timezone": "America/Los_Angeles"},
	 "freq": "DAILY", "metric": "count", "offset": {"CAR": 1000, "IN_VEHICLE": 10000, "ON_FOOT": 10000}, "alpha": {"CAR": 0.05, "IN_VEHICLE": 0.05, "ON_FOOT": 0.05}}`)
	if got != `{"success":true,"results":{"CAR":0,"IN_VEHICLE":5,"ON_FOOT":5}}` {
		t.Errorf("metrics: %s", got)
	}
	berkeley := `{"geometry": {"type": "Polygon", "coordinates": [[[-122.267443, 37.864693], [-122.267443, 37.880687], [-122.250985, 37.880687], [-122.250985, 37.864693], [-122.267443, 37.864693]]]}}`
	got = post(hostURL(t, ctx, countC)+"/count_query", `{"pm_address": "`+pmAddr+`", "uuid": "u",
	 "query": {"offset": 100, "alpha": 0.05, "start_ts": 1440658800, "end_ts": 1440745200, "sel_region": `+berkeley+`}}`)
	if got != `{"success":true,"results":1}` {
		t.Errorf("count: %s", got)
	}
	l, err := pm.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + math.Log(0.05)*55/1000 + 2*math.Log(0.05)*55/10000 + math.Log(0.05)/100; math.Abs(l.Remaining-want) > 1e-9 {
		t.Errorf("remaining budget %v, want %v", l.Remaining, want)
	}
	for name, c := range map[string]testcontainers.Container{"metrics": metricsC, "count": countC} {
		grace := 10 * time.Second
		if err := c.Stop(ctx, &grace); err != nil {
			t.Fatal(err)
		}
		s, err := c.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.ExitCode != 0 {
			t.Errorf("%s exit code %d after SIGTERM, want 0", name, s.ExitCode)
		}
	}
}

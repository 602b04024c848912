package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
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
	"github.com/e-mission/upc/internal/certs/certstest"
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
	// Every instance serves TLS: wait for its health path over TLS (the
	// instance's own certificate is checked by the test's clients).
	waitTLS := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // readiness only
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
			WaitingFor: wait.ForHTTP("/healthz").WithPort("8080/tcp").WithTLS(true, waitTLS).WithStartupTimeout(60 * time.Second).WithPollInterval(50 * time.Millisecond),
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
	return "https://127.0.0.1:" + p.Port()
}

// merge is the union of envs, later ones winning.
func merge(envs ...map[string]string) map[string]string {
	m := map[string]string{}
	for _, e := range envs {
		maps.Copy(m, e)
	}
	return m
}

// TestIntegrationDockerServices runs the FROM scratch images upc/pm,
// upc/metrics and upc/count on a network of their own on the real engine:
// the raw aug-27 day goes into the PM, the pipeline runs over it, then the
// metrics and count containers answer the original requests, reaching the PM
// by its name on the network as they would in a user's cloud; both stop
// gracefully on SIGTERM. Every hop is TLS with certificates from one CA, as
// the router makes them: plain HTTP, a client trusting another CA and a
// service whose CA is another refuse or are refused. Needs Docker.
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
	ca, foreign := certstest.New(t), certstest.New(t)
	hc := ca.Client(time.Minute)
	owner, secret := access.NewToken(access.PrefixInstance), access.NewToken(access.PrefixInstance)
	pmC := startContainer(t, ctx, m.Images["pm"].ID, "pm", nw, merge(map[string]string{"UPC_PM_KDF_MEMORY_MIB": "8", "UPC_PM_BUDGET": "1.0",
		access.EnvSHA256: access.Hash(owner)}, ca.InstanceEnv("00000000000a")))
	pm := pmclient.New(hostURL(t, ctx, pmC), hc, pmclient.WithToken(owner))
	if err := pm.Unseal(ctx, "docker-test-key"); err != nil {
		t.Fatal(err)
	}
	const pmAddr = "https://pm:8080"
	bound := func(service string, read ...string) map[string]string {
		g, err := pm.IssueGrant(ctx, api.GrantRequest{Service: service, Read: read, Spend: 1})
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{access.EnvSHA256: access.Hash(secret), access.EnvPMAddress: pmAddr, access.EnvPMGrant: g.Token}
	}
	metricsC := startContainer(t, ctx, m.Images["metrics"].ID, "metrics", nw, merge(bound("metrics", "analysis/cleaned_section"), ca.InstanceEnv("00000000000b")))
	countC := startContainer(t, ctx, m.Images["count"].ID, "count", nw, merge(bound("count", "analysis/recreated_location"), ca.InstanceEnv("00000000000c")))
	// A count service of another CA: it takes the PM for an impostor.
	strayC := startContainer(t, ctx, m.Images["count"].ID, "stray", nw, merge(bound("count", "analysis/recreated_location"), foreign.InstanceEnv("00000000000d")))
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

	sendWith := func(hc *http.Client, url, token, body string) (int, string) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(bytes.TrimSpace(b))
	}
	send := func(url, token, body string) (int, string) { return sendWith(hc, url, token, body) }
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
	tlsRefusals(t, ctx, hostURL(t, ctx, pmC), hostURL(t, ctx, countC), foreign, owner, secret)
	// The stray service cannot reach the PM: the PM's certificate is not
	// of the CA it trusts, and nothing is charged.
	if code, b := sendWith(foreign.Client(time.Minute), hostURL(t, ctx, strayC)+"/count_query", secret, `{"uuid": "u",
	 "query": {"offset": 100, "alpha": 0.05, "start_ts": 1440658800, "end_ts": 1440745200, "sel_region": `+berkeley+`}}`); code < 500 {
		t.Errorf("service of another CA: %d %s, want a 5xx", code, b)
	}
	if logs := logsUntil(t, ctx, strayC, "unknown authority"); !strings.Contains(logs, "unknown authority") {
		t.Errorf("the stray service's logs do not say why it could not reach the PM:\n%s", logs)
	}
	l, err := pm.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + math.Log(0.05)*55/1000 + 2*math.Log(0.05)*55/10000 + math.Log(0.05)/100; math.Abs(l.Remaining-want) > 1e-9 {
		t.Errorf("remaining budget %v, want %v", l.Remaining, want)
	}
	for name, c := range map[string]testcontainers.Container{"metrics": metricsC, "count": countC, "stray": strayC} {
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

// tlsRefusals checks a PM and a service refuse plain HTTP (net/http's 400,
// the handler never runs) and that a client trusting another CA refuses
// them, bearer tokens or not.
func tlsRefusals(t *testing.T, ctx context.Context, pmURL, countURL string, foreign *certstest.CA, owner, secret string) {
	t.Helper()
	plain := &http.Client{Timeout: 10 * time.Second}
	for name, url := range map[string]string{"pm": pmURL + "/privacy_budget", "count": countURL + "/count_query"} {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+strings.TrimPrefix(url, "https://"), strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+owner)
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatalf("%s over plain HTTP: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), "HTTPS") {
			t.Errorf("%s over plain HTTP: %d %s, want 400 (an HTTP request to an HTTPS server)", name, resp.StatusCode, b)
		}
		req, _ = http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+secret)
		if resp, err := foreign.Client(10 * time.Second).Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("%s: a client trusting another CA was answered %s; its secret went to an unverified server", name, resp.Status)
		} else if !strings.Contains(err.Error(), "unknown authority") {
			t.Errorf("%s, client of another CA: %v, want unknown authority", name, err)
		}
	}
}

// logsUntil is c's logs once they hold want, or as they are after 30 s: a
// service may write its log line after its answer reached the test.
func logsUntil(t *testing.T, ctx context.Context, c testcontainers.Container, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs := containerLogs(t, ctx, c)
		if strings.Contains(logs, want) || time.Now().After(deadline) {
			return logs
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func containerLogs(t *testing.T, ctx context.Context, c testcontainers.Container) string {
	t.Helper()
	rc, err := c.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

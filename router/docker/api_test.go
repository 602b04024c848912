package docker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/routerclient"
	"github.com/e-mission/upc/router/routertest"
)

// stack is a router (HTTP) over two machine agents (HTTP) on the real engine.
// rc is the admin's client.
type stack struct {
	d              deployment
	agentA, agentB *httptest.Server
	core           *router.Router
	srv            *httptest.Server
	rc             *routerclient.Client
	adminToken     string
}

// adminToken is the test routers' admin token.
const adminToken = "test-admin-token-0123456789abcdef0123"

func newStack(t *testing.T, weightA, weightB float64) *stack {
	return newStackLegacy(t, weightA, weightB, false)
}

// newStackLegacy is newStack with insecure_legacy on or off.
func newStackLegacy(t *testing.T, weightA, weightB float64, legacy bool) *stack {
	s := &stack{d: newDeployment(t)}
	s.agentA, s.agentB = s.d.agentServer(t, "a"), s.d.agentServer(t, "b")
	b := backend(t,
		docker.Machine{Name: "machine-a", Weight: weightA, Driver: agentClient(t, s.agentA.URL)},
		docker.Machine{Name: "machine-b", Weight: weightB, Driver: agentClient(t, s.agentB.URL)})
	env := routertest.Env{Image: imageRef, Digest: imageID}
	users, err := router.OpenUsers("", adminToken)
	if err != nil {
		t.Fatal(err)
	}
	s.adminToken = adminToken
	s.core, err = router.New(router.Options{Backend: b, Catalog: env.Catalog(), HealthTimeout: 15 * time.Second, PlainHTTP: true, // the test image is plain
		Users: users, InsecureLegacy: legacy})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewServer(router.Handler(s.core, slog.New(slog.DiscardHandler)))
	t.Cleanup(s.srv.Close)
	if s.rc, err = routerclient.New(s.srv.URL, routerclient.WithToken(adminToken)); err != nil {
		t.Fatal(err)
	}
	return s
}

// post sends body with no token, as the original scripts do.
func post(t *testing.T, url, body string) (int, string) {
	return postAs(t, "", url, body)
}

// postAs sends body bearing token ("": none).
func postAs(t *testing.T, token, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPlacementFollowsWeightsDocker launches through the HTTP API onto two
// agents weighted 3:1, then stops one agent.
func TestPlacementFollowsWeightsDocker(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 3, 1)
	count := map[string]int{}
	onA := map[string]string{} // user → instance, on machine-a
	for i := range 8 {
		user := "user" + string(rune('a'+i))
		in, err := s.rc.Launch(ctx, "test", user)
		if err != nil {
			t.Fatal(err)
		}
		count[in.Machine]++
		if in.Machine == "machine-a" {
			onA[user] = in.ID
		}
	}
	if count["machine-a"] != 6 || count["machine-b"] != 2 {
		t.Fatalf("8 launches on weights 3:1 went %v, want machine-a 6, machine-b 2", count)
	}
	s.agentB.Close() // machine-b's agent goes down
	// Users whose data is on machine-a go on there; a user the router cannot
	// place without machine-b (their data may be there) gets 503 naming it.
	for user, id := range onA {
		if err := s.rc.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
		in, err := s.rc.Launch(ctx, "test", user)
		if err != nil {
			t.Fatalf("launch for %s, whose data is on machine-a, with machine-b down: %v", user, err)
		}
		if in.Machine != "machine-a" {
			t.Fatalf("launched on %s while its agent is down", in.Machine)
		}
		break
	}
	_, err := s.rc.Launch(ctx, "test", "latecomer")
	var re *routerclient.Error
	if !errors.As(err, &re) || re.Code != http.StatusServiceUnavailable || !strings.Contains(re.Message, "machine-b may hold latecomer's data") {
		t.Fatalf("a new user's launch with machine-b down: %v, want 503 naming machine-b", err)
	}
	s.agentA.Close()
	_, err = s.rc.Launch(ctx, "test", "nobody")
	if !errors.As(err, &re) || re.Code != http.StatusServiceUnavailable || !strings.Contains(re.Message, "no machine is up") {
		t.Fatalf("launch with every agent down: %v, want 503 naming the cause", err)
	}
}

// TestOriginalEndpointsDocker drives the original endpoints with the
// original bodies and no token, as the original client scripts send them,
// on a router with insecure_legacy.
func TestOriginalEndpointsDocker(t *testing.T) {
	ctx := context.Background()
	s := newStackLegacy(t, 1, 1, true)
	if code, body := post(t, s.srv.URL+"/setup_networks", ""); code != 200 {
		t.Fatalf("setup_networks: %d %s", code, body)
	}
	code, body := post(t, s.srv.URL+"/service_request", `{"service": "Test"}`)
	if code != 200 {
		t.Fatalf("service_request: %d %s", code, body)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(body), &got); err != nil || len(got) != 1 || !strings.HasPrefix(got["address"], "http://") {
		t.Fatalf("service_request answered %s, want exactly {\"address\": \"http://host:port\"}", body)
	}
	addr := got["address"]
	if code, _, err := routertest.Get(addr, "/healthz"); err != nil || code != 200 {
		t.Fatalf("launched instance: %d %v", code, err)
	}
	addrBody := `{"address": "` + addr + `"}`
	if code, body := post(t, s.srv.URL+"/pause", addrBody); code != 200 || body != "" {
		t.Fatalf("pause: %d %q", code, body)
	}
	if _, _, err := routertest.Get(addr, "/healthz"); err == nil {
		t.Fatal("paused instance answered")
	}
	if code, body := post(t, s.srv.URL+"/unpause", addrBody); code != 200 || body != "" {
		t.Fatalf("unpause: %d %q", code, body)
	}
	routertest.Eventually(t, "unpaused instance answers", func() error { _, _, err := routertest.Get(addr, "/healthz"); return err })
	if code, body := post(t, s.srv.URL+"/kill", addrBody); code != 200 {
		t.Fatalf("kill: %d %q", code, body)
	}
	if _, _, err := routertest.Get(addr, "/healthz"); err == nil {
		t.Fatal("killed instance answered")
	}
	if all, _ := s.rc.List(ctx, ""); len(all) != 0 {
		t.Fatalf("after kill the router lists %+v", all)
	}

	// Token-less, clear_containers removes what the original scripts
	// launched, nothing else; with the admin's token, every instance, and
	// nothing unlabelled or belonging to another agent.
	if code, body := post(t, s.srv.URL+"/service_request", `{"service": "Test"}`); code != 200 {
		t.Fatalf("service_request: %d %s", code, body)
	}
	for _, u := range []string{"x1", "x2"} {
		if _, err := s.rc.Launch(ctx, "test", u); err != nil {
			t.Fatal(err)
		}
	}
	if code, body := post(t, s.srv.URL+"/clear_containers", ""); code != 200 {
		t.Fatalf("token-less clear_containers: %d %s", code, body)
	}
	if all, _ := s.rc.List(ctx, ""); len(all) != 2 {
		t.Fatalf("token-less clear_containers left %+v, want x1's and x2's", all)
	}
	stranger := startContainer(t, map[string]string{"upc.test": "1"})
	otherAgent := s.d.engine(t, "other")
	if _, err := backend(t, docker.Machine{Name: "other", Weight: 1, Driver: otherAgent}).Launch(ctx,
		router.Spec{ID: "0000000000aa", Service: "test", User: "zed", Image: imageRef, Port: 8080}); err != nil {
		t.Fatal(err)
	}
	if code, body := postAs(t, s.adminToken, s.srv.URL+"/clear_containers", ""); code != 200 {
		t.Fatalf("clear_containers: %d %s", code, body)
	}
	if all, _ := s.rc.List(ctx, ""); len(all) != 0 {
		t.Fatalf("after clear the router lists %+v", all)
	}
	for _, want := range []string{"a", "b"} {
		if cs, _ := s.d.engine(t, want).List(ctx); len(cs) != 0 {
			t.Fatalf("agent %s still has %+v after clear", want, cs)
		}
	}
	if ins, err := cli.ContainerInspect(ctx, stranger, client.ContainerInspectOptions{}); err != nil || ins.Container.State.Status != container.StateRunning {
		t.Fatalf("clear touched an unlabelled container: %v", err)
	}
	if cs, _ := otherAgent.List(ctx); len(cs) != 1 {
		t.Fatalf("clear touched another agent's instance: it has %d", len(cs))
	}
}

// startContainer runs the test image without UPC's instance labels.
func startContainer(t *testing.T, labels map[string]string) string {
	ctx := context.Background()
	c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: imageRef, Labels: labels}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}) })
	if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// TestVersionedAPIDocker walks the v1 API through the typed client.
func TestVersionedAPIDocker(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 1, 1)
	if ms, err := s.rc.SetupNetworks(ctx); err != nil || len(ms) != 2 {
		t.Fatalf("networks: %v %v", ms, err)
	}
	a, err := s.rc.Launch(ctx, "test", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == "" || a.Service != "test" || a.User != "alice" || a.Image != imageRef || a.Digest != imageID || a.Machine == "" {
		t.Fatalf("launch answered %+v", a)
	}
	if _, err := s.rc.Launch(ctx, "Test", "bob"); err != nil {
		t.Fatal(err)
	}
	if l, err := s.rc.List(ctx, "alice"); err != nil || len(l) != 1 || l[0].ID != a.ID {
		t.Fatalf("list ?user=alice: %+v %v", l, err)
	}
	if l, _ := s.rc.List(ctx, ""); len(l) != 2 {
		t.Fatalf("list: %+v", l)
	}
	if in, err := s.rc.Pause(ctx, a.ID); err != nil || in.State != "paused" {
		t.Fatalf("pause: %+v %v", in, err)
	}
	if in, err := s.rc.Resume(ctx, a.ID); err != nil || in.State != "running" {
		t.Fatalf("resume: %+v %v", in, err)
	}
	if err := s.rc.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.rc.Get(ctx, a.ID); !errors.Is(err, routerclient.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if n, err := s.rc.Clear(ctx); err != nil || n != 1 {
		t.Fatalf("clear: %d %v", n, err)
	}
	if err := s.rc.Health(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBadInputsDocker sends malformed, unknown and oversized requests: each
// gets a 4xx whose message names the problem, and nothing is launched.
func TestBadInputsDocker(t *testing.T) {
	s := newStack(t, 1, 1)
	huge := `{"service": "test", "user": "` + strings.Repeat("a", router.MaxBody) + `"}`
	cases := []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"malformed json", "POST", "/v1/instances", `{"service":`, 400, "malformed JSON"},
		{"array body", "POST", "/v1/instances", `[]`, 400, "must be"},
		{"unknown field", "POST", "/v1/instances", `{"service":"test","user":"a","gpu":1}`, 400, `unknown field "gpu"`},
		{"empty body", "POST", "/v1/instances", ``, 400, "empty"},
		{"missing user", "POST", "/v1/instances", `{"service":"test"}`, 400, "user: required"},
		{"missing service", "POST", "/v1/instances", `{"user":"a"}`, 400, "service: required"},
		{"unknown service", "POST", "/v1/instances", `{"service":"nope","user":"a"}`, 400, `unknown service "nope"`},
		{"bad user", "POST", "/v1/instances", `{"service":"test","user":"../etc"}`, 400, "user"},
		{"user too long", "POST", "/v1/instances", `{"service":"test","user":"` + strings.Repeat("u", 64) + `"}`, 400, "1-63"},
		{"wrong type", "POST", "/v1/instances", `{"service":5,"user":"a"}`, 400, `"service"`},
		{"huge body", "POST", "/v1/instances", huge, 413, "larger than"},
		{"trailing data", "POST", "/v1/instances", `{"service":"test","user":"a"} {}`, 400, "single JSON value"},
		{"malformed id", "POST", "/v1/instances/zzz/pause", ``, 400, "12 lowercase hex"},
		{"unknown id pause", "POST", "/v1/instances/0123456789ab/pause", ``, 404, "not found"},
		{"unknown id resume", "POST", "/v1/instances/0123456789ab/resume", ``, 404, "not found"},
		{"unknown id delete", "DELETE", "/v1/instances/0123456789ab", ``, 404, "not found"},
		{"unknown id get", "GET", "/v1/instances/0123456789ab", ``, 404, "not found"},
		{"bad user filter", "GET", "/v1/instances?user=a/b", ``, 400, "user"},
		{"unknown query", "GET", "/v1/instances?owner=a", ``, 400, `unknown query parameter "owner"`},
		{"clear with body", "POST", "/v1/clear", `{"all":true}`, 400, "unknown field"},
		{"pause with body", "POST", "/v1/instances/0123456789ab/pause", `{"now":1}`, 400, "unknown field"},
		{"wrong method", "PUT", "/v1/instances", `{}`, 405, ""},
		{"legacy malformed", "POST", "/service_request", `{service: PM}`, 400, "malformed JSON"},
		{"legacy unknown service", "POST", "/service_request", `{"service":"Calendar"}`, 403, `unknown service "Calendar"`},
		{"legacy no service", "POST", "/service_request", `{}`, 400, "service: required"},
		{"legacy empty body", "POST", "/service_request", ``, 400, "empty"},
		{"legacy huge", "POST", "/service_request", huge, 413, "larger than"},
		{"legacy pause unknown address", "POST", "/pause", `{"address":"http://10.9.9.9:1"}`, 404, "no instance at address"},
		{"legacy kill no address", "POST", "/kill", `{}`, 400, "address is empty"},
		{"legacy unpause not json", "POST", "/unpause", `address=x`, 400, "malformed JSON"},
		{"legacy kill wrong type", "POST", "/kill", `{"address": 7}`, 400, `"address"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, s.srv.URL+c.path, bytes.NewBufferString(c.body))
			req.Header.Set("Authorization", "Bearer "+s.adminToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.code {
				t.Fatalf("%s %s: %d %s, want %d", c.method, c.path, resp.StatusCode, b, c.code)
			}
			if c.msg == "" {
				return
			}
			var eb api.Error
			if err := json.Unmarshal(b, &eb); err != nil || !strings.Contains(eb.Error, c.msg) {
				t.Fatalf("error body %s does not say %q", b, c.msg)
			}
		})
	}
	if all, _ := s.rc.List(context.Background(), ""); len(all) != 0 {
		t.Fatalf("bad requests launched %+v", all)
	}
}

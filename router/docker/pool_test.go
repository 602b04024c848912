package docker_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// poolRouter is a router over one in-process agent of d keeping a warm
// pool of size PMs of the real PM image, its pool run until the test ends
// (or stop is called: it returns once the pool is drained).
func poolRouter(t *testing.T, d deployment, size int, viaAgent bool) (r *router.Router, b *docker.Backend, ca *certstest.CA, stop func()) {
	t.Helper()
	m := imagestest.Require(t, "pm")
	cat, err := conf.DefaultCatalog()
	if err != nil {
		t.Fatal(err)
	}
	m.Pin(cat)
	var drv docker.Driver = d.engine(t, "pool")
	if viaAgent {
		pm, _ := cat.Lookup("pm")
		drv = agentClient(t, d.agentServer(t, "pool", agent.Image{Ref: pm.Image, Digest: pm.Digest}).URL)
	}
	b = backend(t, docker.Machine{Name: "local", Weight: 1, Driver: drv})
	ca = certstest.New(t)
	r, err = router.New(router.Options{Backend: b, Catalog: cat, CA: ca.CA, WarmPool: size})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.RunPool(ctx)
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return r, b, ca, stop
}

// waitPool waits until the pool holds size ready PMs (the refill runs in
// the background), failing after a minute.
func waitPool(t *testing.T, r *router.Router, size int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if ready, _ := r.PoolReady(); ready == size {
			return
		}
		if time.Now().After(deadline) {
			ready, _ := r.PoolReady()
			t.Fatalf("the warm pool holds %d ready PMs after a minute, want %d", ready, size)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pooledOnEngine is what the engine itself runs of e's pool: unclaimed
// pool containers (by instance) and claimed ones.
func pooledOnEngine(t *testing.T, e string) (unclaimed, all []string) {
	t.Helper()
	res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", agent.LabelAgent+"="+e).Add("label", agent.LabelPool)})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := cli.VolumeList(context.Background(), client.VolumeListOptions{
		Filters: make(client.Filters).Add("label", agent.LabelAgent+"="+e).Add("label", agent.LabelClaim)})
	if err != nil {
		t.Fatal(err)
	}
	claimed := map[string]bool{}
	for _, v := range vs.Items {
		claimed[v.Labels[agent.LabelClaim]] = true
	}
	for _, c := range res.Items {
		id := c.Labels[agent.LabelInstance]
		if c.Labels[agent.LabelUser] != "" {
			t.Errorf("pool container %s carries a user label %q: labels cannot change, a claim names the user", id, c.Labels[agent.LabelUser])
		}
		all = append(all, id)
		if !claimed[id] {
			unclaimed = append(unclaimed, id)
		}
	}
	slices.Sort(unclaimed)
	return unclaimed, all
}

// TestWarmPoolDocker runs the Docker warm pool on the real engine with
// the real PM image: the pool fills to its size, a new user's launch takes
// a pooled PM and the pool refills behind, two users never get the same
// PM, a claimed PM is bound for good (its user's labels and volume; never
// claimed again, not even after its delete), a returning user gets a PM on
// their own data, no one but the router's certificate provisions a pooled
// PM, and nothing of the pool stays after the pool stops.
// Run through the engine in process (the local machine) and through a
// machine agent over HTTP.
func TestWarmPoolDocker(t *testing.T) {
	t.Run("engine", func(t *testing.T) { warmPool(t, false) })
	t.Run("agent", func(t *testing.T) { warmPool(t, true) })
}

func warmPool(t *testing.T, viaAgent bool) {
	ctx := context.Background()
	d := newDeployment(t)
	const size = 2
	r, b, ca, stop := poolRouter(t, d, size, viaAgent)
	name := (*d.agents)[0]
	waitPool(t, r, size)

	pooled, all := pooledOnEngine(t, name)
	if len(pooled) != size || len(all) != size {
		t.Fatalf("the engine runs pool containers %v (unclaimed %v), want %d unclaimed", all, pooled, size)
	}
	if ins, err := b.List(ctx); err != nil || len(ins) != 0 {
		t.Fatalf("the backend lists %+v %v: unclaimed pool PMs are no one's instances", ins, err)
	}

	// A pooled PM answers nothing before its provision, and only the
	// router's certificate provisions it.
	addr := poolAddress(t, name, pooled[0])
	plain := ca.Client(5 * time.Second)
	if code := call(t, plain, addr+api.PathStatus, "", ""); code != http.StatusServiceUnavailable {
		t.Errorf("a data call to an unprovisioned pool PM: %d, want 503", code)
	}
	if code := call(t, plain, addr+api.PathStatus, "upcs_guess", ""); code != http.StatusServiceUnavailable {
		t.Errorf("a data call with a guessed secret: %d, want 503", code)
	}
	body := `{"user": "mallory", "access_sha256": "` + access.Hash("upcs_mallory") + `"}`
	for who, c := range map[string]*http.Client{
		"no client certificate": plain,
		"a monitor's":           ca.ClientAs(t, certs.MonitorName, 5*time.Second),
		"a user's name":         ca.ClientAs(t, "mallory", 5*time.Second),
	} {
		if code := call(t, c, addr+access.ProvisionPath, "", body); code != http.StatusForbidden {
			t.Errorf("provision with %s: %d, want 403", who, code)
		}
		if code := call(t, c, addr+access.ProvisionPath, "upcs_mallory", body); code != http.StatusForbidden {
			t.Errorf("provision with %s and a bearer token: %d, want 403", who, code)
		}
	}
	routerCert := ca.ClientAs(t, certs.RouterName, 5*time.Second)
	if code := call(t, routerCert, addr+access.ProvisionPath, "", `{"user": "mallory", "access_sha256": "short"}`); code != http.StatusBadRequest {
		t.Errorf("provision with a malformed hash: %d, want 400", code)
	}
	if code := call(t, plain, addr+api.PathStatus, "upcs_mallory", ""); code != http.StatusServiceUnavailable {
		t.Errorf("after the refused provisions mallory's secret: %d, want 503 (still no owner)", code)
	}

	// alice is new: her PM comes from the pool, bound to her.
	alice, err := r.Launch(ctx, "pm", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pooled, string(alice.ID)) {
		t.Fatalf("alice's PM %s is not one of the pool's %v", alice.ID, pooled)
	}
	if alice.User != "alice" || alice.Owner != "alice" || alice.Secret == "" {
		t.Fatalf("alice's PM from the pool: %+v", alice)
	}
	// The router's own provision is the only one: a second is refused.
	if code := call(t, routerCert, alice.Address+access.ProvisionPath, "", body); code != http.StatusConflict {
		t.Errorf("a second provision of alice's PM: %d, want 409", code)
	}
	key := "alice's key, long enough"
	pa := pmclient.New(alice.Address, ca.Client(30*time.Second), pmclient.WithToken(alice.Secret))
	if err := pa.Unseal(ctx, key); err != nil {
		t.Fatalf("alice unseals her pooled PM: %v", err)
	}
	if _, err := pa.Insert(ctx, "Stage_database", "Stage_timeseries", map[string]any{"metadata": map[string]any{"key": "test/pool"}, "data": map[string]any{"n": 1}}); err != nil {
		t.Fatal(err)
	}
	if err := pmclient.New(alice.Address, ca.Client(5*time.Second), pmclient.WithToken("upcs_mallory")).Healthz(ctx); err != nil {
		t.Fatalf("healthz is open: %v", err)
	}
	if code := call(t, plain, alice.Address+api.PathStatus, "upcs_mallory", ""); code != http.StatusForbidden {
		t.Errorf("mallory's provision attempt gave her nothing: %d, want 403", code)
	}

	// The backend and the engine say she owns it, on a volume of hers.
	ins, err := b.List(ctx)
	if err != nil || len(ins) != 1 || ins[0].ID != alice.ID || ins[0].User != "alice" || ins[0].Owner != "alice" {
		t.Fatalf("the backend lists %+v %v, want alice's PM as hers", ins, err)
	}
	vs, err := r.StoredVolumes(ctx, "alice")
	if err != nil || len(vs) != 1 || vs[0].Volume != "data" {
		t.Fatalf("alice's stored volumes: %+v %v", vs, err)
	}

	// The pool refills, with new PMs; bob gets another one than alice.
	waitPool(t, r, size)
	refilled, _ := pooledOnEngine(t, name)
	if slices.Contains(refilled, string(alice.ID)) {
		t.Fatalf("alice's PM %s is back in the pool %v", alice.ID, refilled)
	}
	bob, err := r.Launch(ctx, "pm", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if bob.ID == alice.ID || !slices.Contains(refilled, string(bob.ID)) {
		t.Fatalf("bob's PM %s: want a pooled one (%v) other than alice's %s", bob.ID, refilled, alice.ID)
	}
	pb := pmclient.New(bob.Address, ca.Client(30*time.Second), pmclient.WithToken(bob.Secret))
	if err := pb.Unseal(ctx, "bob's key, long enough too"); err != nil {
		t.Fatal(err)
	}
	if n, err := pb.Count(ctx, api.FindRequest{Database: "Stage_database", Collection: "Stage_timeseries", Filter: map[string]any{}}); err != nil || n != 0 {
		t.Fatalf("bob's pooled PM holds %d entries %v, want none (alice's are hers)", n, err)
	}

	// A claimed PM is never claimed again, by anyone.
	for _, id := range []router.ID{alice.ID, bob.ID} {
		if _, err := b.PoolClaim(ctx, id, "mallory", "mallory"); !errors.Is(err, router.ErrConflict) {
			t.Errorf("claiming %s again: %v, want a conflict", id, err)
		}
	}
	if err := r.Delete(ctx, alice.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PoolClaim(ctx, alice.ID, "mallory", "mallory"); !errors.Is(err, router.ErrNotFound) {
		t.Errorf("claiming alice's deleted PM: %v, want not found", err)
	}

	// alice returns: her data is on her volume, so her PM is a fresh one
	// on it (never a pooled one), and her key opens what she wrote.
	before, _ := pooledOnEngine(t, name)
	again, err := r.Launch(ctx, "pm", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if again.ID == alice.ID || slices.Contains(before, string(again.ID)) {
		t.Fatalf("alice's second PM %s: want a new one, neither her first %s nor a pooled one %v", again.ID, alice.ID, before)
	}
	pa2 := pmclient.New(again.Address, ca.Client(30*time.Second), pmclient.WithToken(again.Secret))
	if err := pa2.Unseal(ctx, key); err != nil {
		t.Fatalf("alice unseals her data again: %v", err)
	}
	if n, err := pa2.Count(ctx, api.FindRequest{Database: "Stage_database", Collection: "Stage_timeseries", Filter: map[string]any{}}); err != nil || n != 1 {
		t.Fatalf("alice's data after her pooled PM's delete: %d entries %v, want 1", n, err)
	}

	// Erasing her data removes the pool volume it lived on.
	if err := r.Delete(ctx, again.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Erase(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if left := volumesOfPool(t, name, string(alice.ID)); len(left) != 0 {
		t.Errorf("after the erase alice's pool volume is still there: %v", left)
	}
	if left := d.leftovers(t, "alice"); len(left) != 0 {
		t.Errorf("after the erase the engine holds of alice: %v", left)
	}

	// Stopping the pool removes every unclaimed PM and its volume; bob's
	// stays his.
	stop()
	if left, all := pooledOnEngine(t, name); len(left) != 0 || !slices.Equal(all, []string{string(bob.ID)}) {
		t.Errorf("after the pool stopped: unclaimed %v, pool containers %v, want none but bob's %s", left, all, bob.ID)
	}
	for _, id := range refilled {
		if id != string(bob.ID) && len(volumesOfPool(t, name, id)) != 0 {
			t.Errorf("the pool volume of unclaimed %s outlived the pool", id)
		}
	}

	// A router started afresh adopts bob's pooled PM as his, from the
	// labels of his claim.
	cat, _ := conf.DefaultCatalog()
	r2, err := router.New(router.Options{Backend: b, Catalog: cat, CA: ca.CA})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := r2.Get(bob.ID); err != nil || got.User != "bob" || got.Owner != "bob" || got.State != router.StateRunning {
		t.Fatalf("after a restart bob's pooled PM is %+v %v, want his, running", got, err)
	}
	if code := call(t, plain, bob.Address+api.PathStatus, bob.Secret, ""); code != http.StatusOK {
		t.Errorf("bob's secret after the restart: %d, want 200", code)
	}
}

// TestWarmPoolAgentRefusesDocker: an agent's pool endpoints answer only
// the router's token, and a claim binds only what it should.
func TestWarmPoolAgentRefusesDocker(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	srv := d.agentServer(t, "a")
	for _, c := range []struct{ path, token, body string }{
		{"/v1/pool", "", `{}`},
		{"/v1/pool/abc/claim", "", `{"user": "mallory"}`},
		{"/v1/pool/drain", "", ``},
		{"/v1/pool/abc/claim", "upca_wrong", `{"user": "mallory"}`},
	} {
		code := call(t, http.DefaultClient, srv.URL+c.path, c.token, c.body)
		if want := map[bool]int{true: 401, false: 403}[c.token == ""]; code != want {
			t.Errorf("POST %s with token %q: %d, want %d", c.path, c.token, code, want)
		}
	}
	ac := agentClient(t, srv.URL)
	if _, err := ac.Claim(ctx, agent.ClaimRequest{Instance: "nosuchpool", User: "mallory"}); !errors.Is(err, agent.ErrNotFound) {
		t.Errorf("claiming a missing pool instance: %v, want not found", err)
	}
	if _, err := ac.Claim(ctx, agent.ClaimRequest{Instance: "abc", User: "../etc"}); !errors.Is(err, agent.ErrInvalid) {
		t.Errorf("claiming for a malformed user: %v, want invalid", err)
	}
	// A pool launch naming a user is refused: a claim binds one.
	_, err := ac.PoolLaunch(ctx, agent.LaunchRequest{Instance: "p1", Service: "pm", User: "mallory", Image: imageRef, Port: 8080})
	if !errors.Is(err, agent.ErrInvalid) {
		t.Errorf("a pool launch naming a user: %v, want invalid", err)
	}
	// A container launched for a user is not a pool one: no claim.
	c, err := ac.Launch(ctx, agent.LaunchRequest{Instance: "u1", Service: "srv", User: "carol", Image: imageRef, Digest: imageID, Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ac.Claim(ctx, agent.ClaimRequest{Instance: c.Instance, User: "mallory"}); !errors.Is(err, agent.ErrConflict) {
		t.Errorf("claiming carol's own container: %v, want a conflict", err)
	}
	cs, err := ac.List(ctx)
	if err != nil || len(cs) != 1 || cs[0].User != "carol" {
		t.Errorf("after the refused claim: %+v %v, want carol's container as hers", cs, err)
	}
}

func call(t *testing.T, c *http.Client, url, token, body string) int {
	t.Helper()
	method := http.MethodPost
	if strings.HasSuffix(url, api.PathStatus) {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, url, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Logf("%s %s: %v", method, url, err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// poolAddress is the address of pool instance id of agent name, as the
// engine publishes it.
func poolAddress(t *testing.T, name, id string) string {
	t.Helper()
	res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{
		Filters: make(client.Filters).Add("label", agent.LabelAgent+"="+name).Add("label", agent.LabelInstance+"="+id)})
	if err != nil || len(res.Items) != 1 {
		t.Fatalf("pool container %s: %v", id, err)
	}
	ins, err := cli.ContainerInspect(context.Background(), res.Items[0].ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bs := range ins.Container.NetworkSettings.Ports {
		for _, p := range bs {
			return "https://" + p.HostIP.String() + ":" + p.HostPort
		}
	}
	t.Fatalf("pool container %s publishes no port", id)
	return ""
}

func volumesOfPool(t *testing.T, name, id string) []string {
	t.Helper()
	vs, err := cli.VolumeList(context.Background(), client.VolumeListOptions{
		Filters: make(client.Filters).Add("label", agent.LabelAgent+"="+name).Add("label", agent.LabelPool+"="+id)})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range vs.Items {
		out = append(out, v.Name)
	}
	return out
}

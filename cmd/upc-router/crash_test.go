package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routerclient"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// envRouterArgs makes the test binary run the router instead of the tests
// (a process of its own, which a test can SIGKILL).
const envRouterArgs = "UPC_TEST_ROUTER_ARGS"

func TestMain(m *testing.M) {
	if a := os.Getenv(envRouterArgs); a != "" {
		var args []string
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			fmt.Fprintln(os.Stderr, "upc-router (test):", err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, args, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "upc-router (test):", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// routerProcess is the router running as a process of its own.
type routerProcess struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
	url  string
}

// startRouterProcess runs the router with args and waits until it listens.
func startRouterProcess(t *testing.T, args ...string) *routerProcess {
	t.Helper()
	a, _ := json.Marshal(args)
	p := &routerProcess{cmd: exec.Command(os.Args[0], "-test.run=^$"), logs: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), envRouterArgs+"="+string(a))
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	re := regexp.MustCompile(`msg=listening .*addr=(\S+)`)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.logs.String()); m != nil {
			p.url = "https://" + m[1]
			return p
		}
		select {
		case err := <-p.done:
			t.Fatalf("router exited: %v\n%s", err, p.logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("router did not listen:\n%s", p.logs)
	return nil
}

// kill SIGKILLs the router: no clean-up of its own runs.
func (p *routerProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// TestRouterKilledMidLaunchDocker kills the router process (SIGKILL) while
// launches of users' PMs are under way, on the real engine, and starts a
// new one on the same machine. Every launch that was answered is adopted
// and answers its owner; every container the engine holds is one the new
// router lists (no orphan); every user whose launch was not answered, or
// whose answer never reached them, launches again at once (the PM whose
// secret no one received is replaced, on the same volume), while a PM its
// owner has used is never replaced (409 naming it).
func TestRouterKilledMidLaunchDocker(t *testing.T) {
	ctx := context.Background()
	m := imagestest.Require(t, "pm")
	cli, err := agent.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	var rb [4]byte
	rand.Read(rb[:])
	suffix := hex.EncodeToString(rb[:])
	name, network := "k"+suffix, "upc-test-"+suffix
	t.Cleanup(func() {
		f := make(client.Filters).Add("label", agent.LabelAgent+"="+name)
		cs, _ := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		for _, c := range cs.Items {
			cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
		vs, _ := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
		for _, v := range vs.Items {
			cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true})
		}
		cli.NetworkRemove(ctx, network, client.NetworkRemoveOptions{})
	})

	dir := t.TempDir()
	ca := certstest.New(t)
	if err := ca.CA.Save(dir); err != nil {
		t.Fatal(err)
	}
	imagesPath := filepath.Join(dir, "images.json")
	if err := m.Save(imagesPath); err != nil {
		t.Fatal(err)
	}
	const adminToken = "crash-test-admin-token-0123456789abcdef"
	config := fmt.Sprintf("machines: {local: 1}\nnetwork: %s\nservice_router_use_tls: true\ncertificate_bundle_path: ca.crt\n"+
		"router: {launch_timeout: 60s, admin_token_file: admin.token, users_file: users.json, ca_cert_path: ca.crt, ca_key_path: ca.key, tls_hosts: [127.0.0.1]}\n", network)
	os.WriteFile(filepath.Join(dir, "upc.yaml"), []byte(config), 0o644)
	os.WriteFile(filepath.Join(dir, "admin.token"), []byte(adminToken+"\n"), 0o600)
	args := []string{"--config", filepath.Join(dir, "upc.yaml"), "--images", imagesPath, "--listen", "127.0.0.1:0", "--name", name}
	hc := ca.Client(90 * time.Second) // verifies instances' names
	rc := &http.Client{Timeout: 90 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	admin := func(p *routerProcess) *routerclient.Client {
		c, err := routerclient.New(p.url, routerclient.WithToken(adminToken), routerclient.WithHTTPClient(rc))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// use is what an owner does first with a new PM: ask its state with
	// the secret (which claims it).
	use := func(in api.Instance) error {
		_, err := pmclient.New(in.Address, hc, pmclient.WithToken(in.Secret)).Status(ctx)
		return err
	}

	p1 := startRouterProcess(t, args...)
	// One launch answered whose answer its caller "lost": it never uses the
	// secret, as if the router had died just before answering.
	lostUser := "lost-" + suffix
	if _, err := admin(p1).Launch(ctx, "pm", lostUser); err != nil {
		t.Fatal(err)
	}
	// Launches under way when the router dies.
	users := make([]string, 6)
	for i := range users {
		users[i] = fmt.Sprintf("u%d-%s", i, suffix)
	}
	type outcome struct {
		in  api.Instance
		err error
	}
	results := make([]outcome, len(users))
	first := make(chan struct{}, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in, err := admin(p1).Launch(ctx, "pm", u)
			if err == nil {
				err = use(in)
			}
			results[i] = outcome{in, err}
			first <- struct{}{}
		}()
	}
	<-first // one launch answered (or failed): the others are under way
	p1.kill(t)
	wg.Wait()
	var answered, cut []string
	for i, r := range results {
		if r.err == nil {
			answered = append(answered, users[i])
		} else {
			cut = append(cut, users[i])
		}
	}
	t.Logf("router killed with %d of %d launches answered (%v); cut short: %v", len(answered), len(users), answered, cut)

	p2 := startRouterProcess(t, args...)
	a2 := admin(p2)
	// Every answered launch was adopted and answers its owner.
	list, err := a2.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]api.Instance{}
	for _, in := range list {
		listed[in.ID] = in
	}
	for i, r := range results {
		if r.err != nil {
			continue
		}
		if _, ok := listed[r.in.ID]; !ok {
			t.Errorf("%s's answered launch %s was not adopted", users[i], r.in.ID)
		}
		if err := use(r.in); err != nil {
			t.Errorf("%s's PM after the restart: %v", users[i], err)
		}
		// Claimed: never replaced.
		if _, err := a2.Launch(ctx, "pm", users[i]); statusCode(err) != http.StatusConflict || !strings.Contains(fmt.Sprint(err), r.in.ID) {
			t.Errorf("%s launching again with a PM in use: %v, want 409 naming %s", users[i], err, r.in.ID)
		}
	}
	// No orphan: every container of this machine is an instance the router
	// lists (leftovers of cut launches are removed).
	waitFor(t, "no container the router does not list", func() error {
		list, err := a2.List(ctx, "")
		if err != nil {
			return err
		}
		known := map[string]bool{}
		for _, in := range list {
			known[in.ID] = true
		}
		cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true,
			Filters: make(client.Filters).Add("label", agent.LabelAgent+"="+name)})
		if err != nil {
			return err
		}
		for _, c := range cs.Items {
			if id := c.Labels[agent.LabelInstance]; !known[id] {
				return fmt.Errorf("container %s (instance %s, %s) is not listed", c.ID[:12], id, c.State)
			}
		}
		return nil
	})
	// The users whose launch was cut short or whose answer was lost
	// launch again at once, and the new PM answers them.
	for _, u := range append(cut, lostUser) {
		in, err := a2.Launch(ctx, "pm", u)
		if err != nil {
			t.Errorf("%s launching again after the router's crash: %v", u, err)
			continue
		}
		if err := use(in); err != nil {
			t.Errorf("%s's new PM: %v", u, err)
		}
		if n := countUser(t, a2, u); n != 1 {
			t.Errorf("%s has %d instances, want 1", u, n)
		}
	}
	if !strings.Contains(p2.logs.String(), "replacing an unclaimed instance") {
		t.Errorf("the lost launch's PM was not replaced; router log:\n%s", p2.logs)
	}
	// Deleting everything leaves no container.
	list, _ = a2.List(ctx, "")
	for _, in := range list {
		if err := a2.Delete(ctx, in.ID); err != nil {
			t.Errorf("delete %s: %v", in.ID, err)
		}
	}
	cs, _ := cli.ContainerList(ctx, client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", agent.LabelAgent+"="+name)})
	if len(cs.Items) != 0 {
		t.Errorf("%d containers left after deleting every instance", len(cs.Items))
	}
}

func statusCode(err error) int {
	var se *httpx.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func countUser(t *testing.T, c *routerclient.Client, user string) int {
	t.Helper()
	list, err := c.List(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// waitFor retries check for up to a minute.
func waitFor(t *testing.T, what string, check func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = check(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

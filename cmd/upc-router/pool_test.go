package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routerclient"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// TestRouterBinaryWarmPoolDocker runs the router process with
// docker.warm_pool on the real engine and the real PM: the pool fills to
// its size, a new user's launch takes a pooled PM, the pool refills, and a
// graceful stop (SIGTERM) leaves no unclaimed pooled PM or pool volume
// behind, while the claimed PM stays its user's.
func TestRouterBinaryWarmPoolDocker(t *testing.T) {
	ctx := context.Background()
	m := imagestest.Require(t, "pm")
	cli, err := agent.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	var rb [4]byte
	rand.Read(rb[:])
	suffix := hex.EncodeToString(rb[:])
	name, network := "w"+suffix, "upc-test-"+suffix
	byAgent := make(client.Filters).Add("label", agent.LabelAgent+"="+name)
	t.Cleanup(func() {
		cs, _ := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: byAgent})
		for _, c := range cs.Items {
			cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
		vs, _ := cli.VolumeList(ctx, client.VolumeListOptions{Filters: byAgent})
		for _, v := range vs.Items {
			cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true})
		}
		cli.NetworkRemove(ctx, network, client.NetworkRemoveOptions{})
	})
	// pool is what the engine holds of the pool: unclaimed pool
	// containers, every pool container, and pool volumes.
	pool := func() (unclaimed, containers, volumes []string) {
		cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: byAgent.Clone().Add("label", agent.LabelPool)})
		if err != nil {
			t.Fatal(err)
		}
		claims, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: byAgent.Clone().Add("label", agent.LabelClaim)})
		if err != nil {
			t.Fatal(err)
		}
		claimed := map[string]bool{}
		for _, v := range claims.Items {
			claimed[v.Labels[agent.LabelClaim]] = true
		}
		for _, c := range cs.Items {
			id := c.Labels[agent.LabelInstance]
			containers = append(containers, id)
			if !claimed[id] {
				unclaimed = append(unclaimed, id)
			}
		}
		vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: byAgent.Clone().Add("label", agent.LabelPool)})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs.Items {
			volumes = append(volumes, v.Labels[agent.LabelPool])
		}
		slices.Sort(unclaimed)
		return unclaimed, containers, volumes
	}

	dir := t.TempDir()
	ca := certstest.New(t)
	if err := ca.CA.Save(dir); err != nil {
		t.Fatal(err)
	}
	imagesPath := filepath.Join(dir, "images.json")
	if err := m.Save(imagesPath); err != nil {
		t.Fatal(err)
	}
	const adminToken = "pool-test-admin-token-0123456789abcdef"
	const size = 2
	config := fmt.Sprintf("machines: {local: 1}\nnetwork: %s\nservice_router_use_tls: true\ncertificate_bundle_path: ca.crt\n"+
		"docker: {warm_pool: %d}\n"+
		"router: {launch_timeout: 60s, admin_token_file: admin.token, users_file: users.json, ca_cert_path: ca.crt, ca_key_path: ca.key, tls_hosts: [127.0.0.1]}\n",
		network, size)
	os.WriteFile(filepath.Join(dir, "upc.yaml"), []byte(config), 0o644)
	os.WriteFile(filepath.Join(dir, "admin.token"), []byte(adminToken+"\n"), 0o600)
	p := startRouterProcess(t, "--config", filepath.Join(dir, "upc.yaml"), "--images", imagesPath, "--listen", "127.0.0.1:0", "--name", name)
	rc, err := routerclient.New(p.url, routerclient.WithToken(adminToken),
		routerclient.WithHTTPClient(&http.Client{Timeout: 90 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}))
	if err != nil {
		t.Fatal(err)
	}
	full := func() []string {
		var ready []string
		waitFor(t, "the pool to fill", func() error {
			if ready, _, _ = pool(); len(ready) != size {
				return fmt.Errorf("%d unclaimed pooled PMs, want %d", len(ready), size)
			}
			return nil
		})
		return ready
	}
	ready := full()
	in, err := rc.Launch(ctx, "pm", "wendy")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ready, in.ID) || in.User != "wendy" {
		t.Fatalf("wendy's PM %s (user %q): want one of the pool's %v, hers", in.ID, in.User, ready)
	}
	if _, err := pmclient.New(in.Address, ca.Client(30*time.Second), pmclient.WithToken(in.Secret)).Status(ctx); err != nil {
		t.Fatalf("wendy's secret at her pooled PM: %v", err)
	}
	if refilled := full(); slices.Contains(refilled, in.ID) {
		t.Fatalf("wendy's PM %s is back in the pool %v", in.ID, refilled)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-p.done; err != nil {
		t.Fatalf("router stopped with %v\n%s", err, p.logs)
	}
	unclaimed, containers, volumes := pool()
	if len(unclaimed) != 0 || !slices.Equal(containers, []string{in.ID}) || !slices.Equal(volumes, []string{in.ID}) {
		t.Fatalf("after the router stopped: unclaimed %v, pool containers %v, pool volumes of %v; want nothing but wendy's %s\n%s",
			unclaimed, containers, volumes, in.ID, p.logs)
	}
}

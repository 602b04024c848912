package docker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/router/routertest"
)

// TestRouterAndAgentsAsContainersDocker runs the real upc/router and
// upc/agent images as containers on a UPC network, the agents driving the
// engine through its mounted socket and publishing instance ports on the
// network's gateway, as make e2e does: the host reaches the router and the
// instances, instances reach each other's addresses, and placement follows
// the agents' weights. Every hop is TLS from one CA, as an operator sets it
// up with `upc certs`: the router's port (a certificate it issues itself),
// router → agent (mutual), and each instance (its own certificate).
func TestRouterAndAgentsAsContainersDocker(t *testing.T) {
	ctx := context.Background()
	m := imagestest.Require(t, "router", "agent")
	d := newDeployment(t)
	_, err := cli.NetworkCreate(ctx, d.network, client.NetworkCreateOptions{Driver: "bridge", Labels: map[string]string{"upc.test": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	gw := gateway(t, d.network)

	dir := t.TempDir()
	catalog := fmt.Sprintf(`{"services": [{"name": "test", "aliases": ["Test"], "image": %q, "digest": %q, "port": 8080, "health": "/healthz"}]}`, imageRef, imageID)
	// The router and the agents share the agent token (agent.token_file);
	// the agents run only the catalog's image. The router's container
	// reads the admin token as whatever user it runs as.
	config := fmt.Sprintf(`machines: {"agent-a:54321": 3, "agent-b:54321": 1}
network: %s
catalog: catalog.json
service_router_use_tls: true
machines_use_tls: true
certificate_bundle_path: ca.crt
agent: {token_file: agent.token, tls_cert_path: agent.crt, tls_key_path: agent.key}
router: {admin_token_file: admin.token, ca_cert_path: ca.crt, ca_key_path: ca.key, tls_hosts: [router, 127.0.0.1]}
`, d.network)
	ca := certstest.New(t)
	caKey, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	agentCert, agentKey, err := ca.CA.Issue(certs.Request{Name: "agent-a", Hosts: []string{"agent-b"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"catalog.json": catalog, "upc.yaml": config, "agent.token": agentToken + "\n", "admin.token": adminToken + "\n",
		"ca.crt": string(ca.CertPEM), "ca.key": string(caKey), "agent.crt": string(agentCert), "agent.key": string(agentKey)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name, image string, cmd []string, mounts []mount.Mount, publish bool) string {
		port, _ := network.PortFrom(4430, network.TCP)
		hc := &container.HostConfig{Mounts: mounts}
		if publish {
			hc.PortBindings = network.PortMap{port: {{HostIP: netip.MustParseAddr("127.0.0.1")}}}
		}
		c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
			Name:       d.prefix + "-" + name,
			Config:     &container.Config{Image: image, Cmd: cmd, Labels: map[string]string{"upc.test": "1"}, ExposedPorts: network.PortSet{port: {}}},
			HostConfig: hc,
			NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
				d.network: {Aliases: []string{name}},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				logs, _ := cli.ContainerLogs(ctx, c.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
				if logs != nil {
					b := new(strings.Builder)
					buf := make([]byte, 64<<10)
					n, _ := logs.Read(buf)
					b.Write(buf[:n])
					t.Logf("%s logs:\n%s", name, b)
					logs.Close()
				}
			}
			cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
		})
		if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
			t.Fatal(err)
		}
		if !publish {
			return ""
		}
		ins, err := cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return "https://127.0.0.1:" + ins.Container.NetworkSettings.Ports[port][0].HostPort
	}
	cfgMount := []mount.Mount{{Type: mount.TypeBind, Source: dir, Target: "/etc/upc", ReadOnly: true}}
	sock := []mount.Mount{{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/var/run/docker.sock"}, cfgMount[0]}
	for _, a := range []string{"a", "b"} {
		full := d.prefix + "-" + a
		*d.agents = append(*d.agents, full) // cleanup removes its instances
		run("agent-"+a, m.Images["agent"].ID, []string{"--config", "/etc/upc/upc.yaml", "--network", d.network, "--name", full, "--listen", ":54321"}, sock, false)
	}
	routerURL := run("router", m.Images["router"].ID, []string{"--config", "/etc/upc/upc.yaml"}, cfgMount, true)

	routerHTTP := &http.Client{Timeout: time.Minute, Transport: certs.Transport(ca.Pool(), nil)}
	instances := ca.Client(5 * time.Second)
	get := func(c *http.Client, url string) (int, string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	routertest.Eventually(t, "router answers", func() error {
		code, _, err := get(routerHTTP, routerURL+"/healthz")
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})
	var addrs []string
	machines := map[string]int{}
	for i := range 4 {
		body := fmt.Sprintf(`{"service": "Test", "user": "u%d"}`, i)
		req, _ := http.NewRequest(http.MethodPost, routerURL+"/v1/instances", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := routerHTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var in struct{ Address, Machine, Error string }
		json.NewDecoder(resp.Body).Decode(&in)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("launch: %d %s", resp.StatusCode, in.Error)
		}
		if !strings.HasPrefix(in.Address, "https://"+gw.String()+":") {
			t.Fatalf("address %s is not on the network's gateway %s", in.Address, gw)
		}
		addrs = append(addrs, in.Address)
		machines[in.Machine]++
	}
	if machines["agent-a:54321"] != 3 || machines["agent-b:54321"] != 1 {
		t.Fatalf("4 launches on weights 3:1 went %v", machines)
	}
	// The host reaches an instance; an instance reaches another's address.
	if code, _, err := get(instances, addrs[0]+"/healthz"); err != nil || code != 200 {
		t.Fatalf("host → instance: %d %v", code, err)
	}
	if code, body, err := get(instances, addrs[0]+"/fetch?url="+addrs[3]+"/"); err != nil || code != 200 || !strings.Contains(body, "hostname") {
		t.Fatalf("instance → instance on another agent: %d %q %v", code, body, err)
	}
	// A client trusting another CA refuses the router and the instances.
	other := certstest.New(t)
	for what, c := range map[string]struct {
		hc  *http.Client
		url string
	}{"router": {&http.Client{Transport: certs.Transport(other.Pool(), nil), Timeout: 5 * time.Second}, routerURL}, "instance": {other.Client(5 * time.Second), addrs[0]}} {
		if _, _, err := get(c.hc, c.url+"/healthz"); err == nil || !strings.Contains(err.Error(), "unknown authority") {
			t.Errorf("%s, to a client of another CA: %v, want unknown authority", what, err)
		}
	}
	// Plain HTTP is refused at the router and at an instance.
	for _, u := range []string{routerURL, addrs[0]} {
		if code, _, err := routertest.Get("http://"+strings.TrimPrefix(u, "https://"), "/healthz"); err != nil || code != 400 {
			t.Errorf("plain HTTP to %s: %d %v, want 400", u, code, err)
		}
	}
}

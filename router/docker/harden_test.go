package docker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routertest"
)

// probe is the test server's /probe: who it runs as, what it can write.
type probe struct {
	UID, GID int
	Writable map[string]bool
}

func getProbe(t *testing.T, address string) probe {
	t.Helper()
	code, body, err := routertest.Get(address, "/probe")
	if err != nil || code != 200 {
		t.Fatalf("probe %s: %d %q %v", address, code, body, err)
	}
	var p probe
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("probe %q: %v", body, err)
	}
	return p
}

func answers(t *testing.T, what, address string) {
	t.Helper()
	routertest.Eventually(t, what, func() error {
		code, _, err := routertest.Get(address, "/healthz")
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})
}

// TestHardenedContainerDocker launches an instance with a per-user volume
// on a real engine and inspects its container: user 65532:65532, read-only
// root, a noexec tmpfs at /tmp, every capability dropped, no new
// privileges, a pids limit. The process inside really runs as 65532 and
// writes its volume and /tmp, and nothing else.
func TestHardenedContainerDocker(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	e := d.engine(t, "hard")
	c, err := e.Launch(ctx, agent.LaunchRequest{Instance: "4a4d00000001", Service: "test", User: "hanna", Image: imageRef, Digest: imageID,
		Port: 8080, Volumes: []agent.Volume{{Name: "data", Path: "/data", PerUser: true}}, Labels: map[string]string{"upc.test": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	ins, err := cli.ContainerInspect(ctx, c.ContainerID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hc := ins.Container.HostConfig
	if u := ins.Container.Config.User; u != "65532:65532" {
		t.Errorf("User = %q, want 65532:65532", u)
	}
	if !hc.ReadonlyRootfs {
		t.Error("root filesystem is writable")
	}
	if !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 {
		t.Errorf("CapDrop = %v, CapAdd = %v; want ALL dropped, none added", hc.CapDrop, hc.CapAdd)
	}
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges") {
		t.Errorf("SecurityOpt = %v, want no-new-privileges", hc.SecurityOpt)
	}
	if hc.PidsLimit == nil || *hc.PidsLimit != agent.DefaultPidsLimit {
		t.Errorf("PidsLimit = %v, want %d", hc.PidsLimit, agent.DefaultPidsLimit)
	}
	if o := hc.Tmpfs["/tmp"]; !strings.Contains(o, "noexec") || !strings.Contains(o, "nosuid") || !strings.Contains(o, "size=") {
		t.Errorf("Tmpfs = %v, want a small noexec,nosuid /tmp", hc.Tmpfs)
	}
	if hc.Privileged {
		t.Error("privileged")
	}
	answers(t, "the hardened instance answers", c.Address)
	p := getProbe(t, c.Address)
	want := map[string]bool{"/data": true, "/tmp": true, "/": false}
	if p.UID != 65532 || p.GID != 65532 || !maps(p.Writable, want) {
		t.Errorf("probe = %+v, want uid and gid 65532 writing %v", p, want)
	}
}

func maps(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestLegacyVolumeOwnedDocker: a per-user volume of the days before volume
// names had their hash, written by a service running as root (a file of
// root's, mode 0600), is found by its labels and given to the non-root
// service before it starts (the image's own-data, as root with CAP_CHOWN
// only): the service reads the old note and writes again, and no second
// volume is made.
func TestLegacyVolumeOwnedDocker(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	e := d.engine(t, "old")
	name := d.prefix + "-old"
	legacy := agent.LegacyVolumeName(name, "olga", "data")
	if _, err := cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: legacy,
		Labels: map[string]string{agent.LabelUser: "olga", agent.LabelVolume: "data", agent.LabelAgent: name, "upc.test": "1"}}); err != nil {
		t.Fatal(err)
	}
	// As root, as services ran before: the note is root's, 0600.
	port := network.MustParsePort("8080/tcp")
	old, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{Image: imageID, User: "0:0", ExposedPorts: network.PortSet{port: {}},
			Labels: map[string]string{agent.LabelAgent: name, "upc.test": "1"}},
		HostConfig: &container.HostConfig{
			PortBindings: network.PortMap{port: {{HostIP: netip.MustParseAddr("127.0.0.1")}}},
			Mounts:       []mount.Mount{{Type: mount.TypeVolume, Source: legacy, Target: "/data"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.ContainerRemove(context.Background(), old.ID, client.ContainerRemoveOptions{Force: true})
	if _, err := cli.ContainerStart(ctx, old.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	oi, err := cli.ContainerInspect(ctx, old.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldAddr := "http://127.0.0.1:" + oi.Container.NetworkSettings.Ports[port][0].HostPort
	answers(t, "the root instance answers", oldAddr)
	resp, err := http.Post(oldAddr+"/write", "text/plain", strings.NewReader("olga's note"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("write as root: %v %v", resp, err)
	}
	resp.Body.Close()
	if p := getProbe(t, oldAddr); p.UID != 0 {
		t.Fatalf("the old instance runs as %d, want root", p.UID)
	}
	if _, err := cli.ContainerRemove(ctx, old.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}

	c, err := e.Launch(ctx, agent.LaunchRequest{Instance: "01da00000001", Service: "test", User: "olga", Image: imageRef, Digest: imageID,
		Port: 8080, Volumes: []agent.Volume{{Name: "data", Path: "/data", PerUser: true}}, Labels: map[string]string{"upc.test": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	answers(t, "the non-root instance answers", c.Address)
	if code, body, err := routertest.Get(c.Address, "/read"); err != nil || code != 200 || body != "olga's note" {
		t.Errorf("the non-root instance reads %d %q %v, want the old note", code, body, err)
	}
	resp, err = http.Post(c.Address+"/write", "text/plain", strings.NewReader("olga's new note"))
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("write as 65532: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if vols, err := e.UserVolumes(ctx, "olga"); err != nil || !slices.Equal(vols, []agent.UserVolume{{Name: legacy, Volume: "data"}}) {
		t.Errorf("olga's volumes = %v %v, want only the old one, %s", vols, err, legacy)
	}
	ins, err := cli.ContainerInspect(ctx, c.ContainerID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ins.Container.Config.User != "65532:65532" || len(ins.Container.HostConfig.CapAdd) != 0 {
		t.Errorf("the instance runs as %q with %v added", ins.Container.Config.User, ins.Container.HostConfig.CapAdd)
	}
	// The one-shot that owned the data is gone.
	cs, _ := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("name", "upc-own-data-01da00000001")})
	if len(cs.Items) != 0 {
		t.Errorf("own-data container left behind: %v", cs.Items[0].Names)
	}
}

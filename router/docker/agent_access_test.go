package docker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routertest"
)

// TestAgentRefusesAttacksDocker is the attack on a real engine: an
// agent serving its router (token, catalog) holds user alice's instance
// and volume; an anonymous launch of an arbitrary local image with alice's
// volume mounted is refused (401), as is one with a wrong token (403), one
// bearing the token but running an image outside the catalog (403); so is
// an erase of her volume without the token (401, 403) and, with it, while
// her instance mounts the volume (409). Nothing is created or removed, and
// alice's instance and data are as they were. Then a user
// whose user and volume names join up to alice's volume's gets a volume of
// its own, empty.
func TestAgentRefusesAttacksDocker(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	srv := d.agentServer(t, "guard")
	name := d.prefix + "-guard"

	// A real local image that is not in the catalog: the test image under
	// another name, so only the catalog check stands in the way.
	stray := "upc-test/not-in-catalog:" + randName("t")
	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: imageID, Target: stray}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ImageRemove(context.Background(), stray, client.ImageRemoveOptions{}) })

	// Alice's instance, launched by the router, with a note in her volume.
	alice := agent.LaunchRequest{Instance: "a11ce0000001", Service: "test", User: "alice", Image: imageRef, Digest: imageID,
		Port: 8080, Volumes: []agent.Volume{{Name: "pm-data", Path: "/data", PerUser: true}}, Labels: map[string]string{"upc.test": "1"}}
	c, err := agentClient(t, srv.URL).Launch(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	routertest.Eventually(t, "alice's instance answers", func() error {
		code, _, err := routertest.Get(c.Address, "/healthz")
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})
	resp, err := http.Post(c.Address+"/write", "text/plain", strings.NewReader("alice's note"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("write alice's note: %v %v", resp, err)
	}
	resp.Body.Close()
	before := snapshot(t, name)
	if len(before) != 2 || !strings.HasPrefix(before[0], "container ") || before[1] != "volume "+agent.VolumeName(name, "alice", "pm-data") {
		t.Fatalf("before the attacks: %q, want alice's container and volume", before)
	}

	with := func(f func(*agent.LaunchRequest)) agent.LaunchRequest {
		r := alice
		r.Instance = "a77ac0000001"
		f(&r)
		return r
	}
	attack := with(func(r *agent.LaunchRequest) { r.Image, r.Digest = stray, "" })
	bearer := "Bearer " + agentToken
	for _, a := range []struct {
		name         string
		method, path string
		auth         string
		body         any
		want         int
		msg          string
	}{
		{"anonymous launch of a stray image with alice's volume", "POST", "/v1/containers", "", attack, 401, "Authorization: Bearer"},
		{"anonymous launch of the catalog image with alice's volume", "POST", "/v1/containers", "", with(func(*agent.LaunchRequest) {}), 401, "Authorization: Bearer"},
		{"launch with a wrong token", "POST", "/v1/containers", "Bearer upca_not-the-token", attack, 403, "wrong agent token"},
		{"token-bearing launch of a stray image", "POST", "/v1/containers", bearer, attack, 403, "not in this agent's catalog"},
		{"token-bearing launch of a stray image by its ID", "POST", "/v1/containers", bearer,
			with(func(r *agent.LaunchRequest) { r.Image, r.Digest = stray, imageID }), 403, "not in this agent's catalog"},
		{"anonymous delete of alice's instance", "DELETE", "/v1/containers/" + alice.Instance, "", nil, 401, "Authorization: Bearer"},
		{"anonymous clear", "POST", "/v1/clear", "", nil, 401, "Authorization: Bearer"},
		{"anonymous list", "GET", "/v1/containers", "", nil, 401, "Authorization: Bearer"},
		{"anonymous erase of alice's volume", "DELETE", "/v1/volumes?user=alice", "", nil, 401, "Authorization: Bearer"},
		{"erase of alice's volume with a wrong token", "DELETE", "/v1/volumes?user=alice", "Bearer upca_not-the-token", nil, 403, "wrong agent token"},
		{"token-bearing erase of alice's volume while her instance mounts it", "DELETE", "/v1/volumes?user=alice", bearer, nil, 409, "mounted by upc-test-" + alice.Instance},
	} {
		t.Run(a.name, func(t *testing.T) {
			var body io.Reader
			if a.body != nil {
				b, _ := json.Marshal(a.body)
				body = bytes.NewReader(b)
			}
			req, _ := http.NewRequest(a.method, srv.URL+a.path, body)
			if a.auth != "" {
				req.Header.Set("Authorization", a.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var eb struct{ Error string }
			json.NewDecoder(resp.Body).Decode(&eb)
			if resp.StatusCode != a.want || !strings.Contains(eb.Error, a.msg) {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, eb.Error, a.want, a.msg)
			}
		})
	}

	if after := snapshot(t, name); !slices.Equal(after, before) {
		t.Errorf("the refused calls changed the engine:\nbefore %q\nafter  %q", before, after)
	}
	if code, body, err := routertest.Get(c.Address, "/read"); err != nil || code != 200 || body != "alice's note" {
		t.Errorf("alice's note after the attacks: %d %q %v", code, body, err)
	}

	// User "alice-pm"'s volume "data" joined up to alice's "pm-data" once;
	// volume names now hash them apart: alice-pm gets a volume of its own,
	// empty.
	joined, err := agentClient(t, srv.URL).Launch(ctx, with(func(r *agent.LaunchRequest) { r.User, r.Volumes[0].Name = "alice-pm", "data" }))
	if err != nil {
		t.Fatal(err)
	}
	routertest.Eventually(t, "alice-pm's instance answers", func() error {
		code, _, err := routertest.Get(joined.Address, "/healthz")
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})
	if code, body, err := routertest.Get(joined.Address, "/read"); err != nil || code != 404 {
		t.Errorf("alice-pm reads %d %q %v, want 404 (an empty volume of its own)", code, body, err)
	}
	if vs := snapshot(t, name); !slices.Contains(vs, "volume "+agent.VolumeName(name, "alice-pm", "data")) ||
		!slices.Contains(vs, "volume "+agent.VolumeName(name, "alice", "pm-data")) {
		t.Errorf("volumes %q, want alice's and alice-pm's apart", vs)
	}
}

// snapshot lists the agent's containers (ID and state) and volumes.
func snapshot(t *testing.T, agentName string) []string {
	t.Helper()
	ctx := context.Background()
	f := make(client.Filters).Add("label", agent.LabelAgent+"="+agentName)
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range cs.Items {
		out = append(out, "container "+c.ID[:12]+" "+string(c.State)+" "+strings.Join(c.Names, ","))
	}
	for _, v := range vs.Items {
		out = append(out, "volume "+v.Name)
	}
	// Nothing named for the attacks, whoever's label it carries.
	all, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("name", "a77ac0000001")})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all.Items {
		out = append(out, "attack container "+strings.Join(c.Names, ","))
	}
	slices.Sort(out)
	return out
}

package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/client"
)

// These tests need no Docker Engine: the agent talks to fakeDocker, which
// answers what a refused launch may ask (network, images, volumes) and
// records every call that would change something.

const (
	testToken  = "upca_test-token-0123456789abcdef0123456789abcdef"
	catalogRef = "upc/pm:test"
	catalogID  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	unpinned   = "upc/count:test"
	otherID    = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

var versionRE = regexp.MustCompile(`^/v[0-9.]+`)

type fakeDocker struct {
	mu      sync.Mutex
	changes []string                     // "METHOD /path" of every call that would change something
	volumes map[string]map[string]string // existing volumes: name → labels
	images  map[string]string            // local image references → IDs
}

func (f *fakeDocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	path := versionRE.ReplaceAllString(r.URL.Path, "")
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		f.changes = append(f.changes, r.Method+" "+path)
	}
	netID := "0123456789abcdef0123456789abcdef"
	switch {
	case path == "/_ping":
		w.Write([]byte("OK"))
	case r.Method == http.MethodGet && path == "/networks":
		reply(200, []map[string]any{{"Name": "upc", "Id": netID}})
	case r.Method == http.MethodGet && path == "/networks/"+netID:
		reply(200, map[string]any{"Name": "upc", "Id": netID,
			"IPAM": map[string]any{"Config": []map[string]string{{"Subnet": "172.30.0.0/16", "Gateway": "172.30.0.1"}}}})
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/images/") && strings.HasSuffix(path, "/json"):
		ref := strings.TrimSuffix(strings.TrimPrefix(path, "/images/"), "/json")
		if id, ok := f.images[ref]; ok {
			reply(200, map[string]any{"Id": id})
			return
		}
		reply(404, map[string]string{"message": "No such image: " + ref})
	case r.Method == http.MethodGet && path == "/volumes":
		var filters struct {
			Label map[string]bool `json:"label"`
		}
		json.Unmarshal([]byte(r.URL.Query().Get("filters")), &filters)
		var out []map[string]any
		for name, labels := range f.volumes {
			match := true
			for l := range filters.Label {
				k, v, _ := strings.Cut(l, "=")
				match = match && labels[k] == v
			}
			if match {
				out = append(out, map[string]any{"Name": name, "Driver": "local", "Labels": labels})
			}
		}
		reply(200, map[string]any{"Volumes": out})
	case r.Method == http.MethodPost && path == "/volumes/create":
		var req struct {
			Name   string
			Labels map[string]string
		}
		json.NewDecoder(r.Body).Decode(&req)
		labels, ok := f.volumes[req.Name]
		if !ok { // as Docker does: an existing volume comes back as it is
			labels = req.Labels
			f.volumes[req.Name] = labels
		}
		reply(201, map[string]any{"Name": req.Name, "Driver": "local", "Labels": labels})
	default:
		reply(500, map[string]string{"message": "fake docker: not here"})
	}
}

func (f *fakeDocker) Changes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.changes...)
}

// newTestAgent serves an agent named name over fakeDocker with opts.
func newTestAgent(t *testing.T, name string, opts HandlerOptions) (*httptest.Server, *fakeDocker, *bytes.Buffer) {
	t.Helper()
	fd := &fakeDocker{volumes: map[string]map[string]string{}, images: map[string]string{catalogRef: catalogID, unpinned: otherID}}
	dsrv := httptest.NewServer(fd)
	t.Cleanup(dsrv.Close)
	cli, err := client.New(client.WithHost("tcp://"+dsrv.Listener.Addr().String()), client.WithAPIVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	logs := &bytes.Buffer{}
	logger := slog.New(slog.NewTextHandler(&syncWriter{w: logs}, nil))
	e, err := NewEngine(cli, Options{Name: name}, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(e, logger, opts))
	t.Cleanup(srv.Close)
	return srv, fd, logs
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func call(t *testing.T, method, url, auth string, body any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb struct{ Error string }
	json.Unmarshal(b, &eb)
	return resp.StatusCode, eb.Error
}

// attack is the launch of the issue: an arbitrary image with user A's PM
// volume mounted.
var attack = LaunchRequest{Instance: "0000000000aa", Service: "pm", User: "alice", Image: "busybox:latest",
	Port: 8080, Volumes: []Volume{{Name: "pm-data", Path: "/data", PerUser: true}}}

var catalogLaunch = LaunchRequest{Instance: "0000000000bb", Service: "pm", User: "alice", Image: catalogRef, Digest: catalogID,
	Port: 8080, Volumes: []Volume{{Name: "pm-data", Path: "/data", PerUser: true}}}

// TestHandlerRequiresToken: every route but GET /healthz and GET /readyz
// (and, for a monitor's client certificate, GET /metrics) answers 401 to a
// caller with no token and 403 to a wrong one, logged with the caller's
// address, and nothing reaches Docker.
func TestHandlerRequiresToken(t *testing.T) {
	routes := []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/containers", attack},
		{"POST", "/v1/containers", catalogLaunch},
		{"GET", "/v1/containers", nil},
		{"POST", "/v1/network", nil},
		{"POST", "/v1/containers/0000000000aa/pause", nil},
		{"POST", "/v1/containers/0000000000aa/unpause", nil},
		{"DELETE", "/v1/containers/0000000000aa", nil},
		{"GET", "/v1/volumes?user=alice", nil},
		{"DELETE", "/v1/volumes?user=alice", nil},
		{"POST", "/v1/clear", nil},
		{"POST", "/v1/pool", LaunchRequest{Instance: "0000000000cc", Service: "pm", Image: catalogRef, Digest: catalogID, Port: 8080}},
		{"POST", "/v1/pool/0000000000cc/claim", ClaimRequest{User: "mallory"}},
		{"POST", "/v1/pool/drain", nil},
		{"GET", "/metrics", nil},
		{"GET", "/nope", nil},
	}
	srv, fd, logs := newTestAgent(t, "upc", HandlerOptions{Token: testToken, Images: []Image{{Ref: catalogRef, Digest: catalogID}}})
	// An agent given no token refuses even a caller that sends one.
	open, openFD, _ := newTestAgent(t, "upc", HandlerOptions{Images: []Image{{Ref: catalogRef, Digest: catalogID}}})
	for _, r := range routes {
		for _, c := range []struct {
			name, url, auth string
			want            int
		}{
			{"none", srv.URL, "", http.StatusUnauthorized},
			{"not bearer", srv.URL, "Basic " + testToken, http.StatusUnauthorized},
			{"empty bearer", srv.URL, "Bearer ", http.StatusUnauthorized},
			{"wrong", srv.URL, "Bearer upca_wrong", http.StatusForbidden},
			{"prefix of the token", srv.URL, "Bearer " + testToken[:20], http.StatusForbidden},
			{"agent without a token", open.URL, "Bearer " + testToken, http.StatusForbidden},
			{"agent without a token, none", open.URL, "", http.StatusUnauthorized},
		} {
			t.Run(r.method+" "+r.path+" "+c.name, func(t *testing.T) {
				code, msg := call(t, r.method, c.url+r.path, c.auth, r.body)
				if code != c.want {
					t.Fatalf("%d %q, want %d", code, msg, c.want)
				}
				if !strings.Contains(msg, "agent") {
					t.Errorf("message %q does not say what is wanted", msg)
				}
			})
		}
	}
	if ch := append(fd.Changes(), openFD.Changes()...); len(ch) > 0 {
		t.Errorf("refused calls reached Docker: %q", ch)
	}
	log := logs.String()
	for _, want := range []string{"msg=refused", "remote=127.0.0.1:", "path=/v1/containers", "status=401", "status=403"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	// GET /healthz and /readyz need no token (the router's and the
	// harness's probes).
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, msg := call(t, "GET", srv.URL+p, "", nil); code != 200 {
			t.Errorf("%s: %d %q", p, code, msg)
		}
	}
}

// TestHandlerLaunchesOnlyCatalogImages: with the right token, a launch of an
// image outside the catalog, or of a digest the catalog does not name for
// its reference, answers 403, is logged, and creates nothing.
func TestHandlerLaunchesOnlyCatalogImages(t *testing.T) {
	srv, fd, logs := newTestAgent(t, "upc", HandlerOptions{Token: testToken,
		Images: []Image{{Ref: catalogRef, Digest: catalogID}, {Ref: unpinned}}})
	with := func(f func(*LaunchRequest)) LaunchRequest {
		r := catalogLaunch
		f(&r)
		return r
	}
	cases := []struct {
		name string
		req  LaunchRequest
		want string
	}{
		{"the issue's attack: another image with A's volume", attack, `image "busybox:latest" is not in this agent's catalog`},
		{"another image, no volume", with(func(r *LaunchRequest) { r.Image, r.Digest, r.Volumes = "busybox:latest", "", nil }), "not in this agent's catalog"},
		{"a catalog name with another tag", with(func(r *LaunchRequest) { r.Image, r.Digest = "upc/pm:latest", "" }), "not in this agent's catalog"},
		{"a catalog reference run as another digest", with(func(r *LaunchRequest) { r.Digest = otherID }), "is not the catalog's image " + catalogRef},
		{"a catalog reference run as a short ID", with(func(r *LaunchRequest) { r.Digest = catalogID[7:19] }), "is not the catalog's image"},
		{"a digest alone, not pinned", with(func(r *LaunchRequest) { r.Image, r.Digest = "", otherID }), "image " + otherID + " is not in this agent's catalog"},
		{"an unpinned reference run as a digest it is not", with(func(r *LaunchRequest) { r.Image, r.Digest = unpinned, catalogID }), "is not the catalog's image " + unpinned},
		{"an uncatalogued reference run as a catalog digest", with(func(r *LaunchRequest) { r.Image = "busybox:latest" }), "not in this agent's catalog"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, msg := call(t, "POST", srv.URL+"/v1/containers", "Bearer "+testToken, c.req)
			if code != http.StatusForbidden || !strings.Contains(msg, c.want) {
				t.Fatalf("%d %q, want 403 %q", code, msg, c.want)
			}
		})
	}
	if ch := fd.Changes(); len(ch) > 0 {
		t.Errorf("refused launches reached Docker: %q", ch)
	}
	log := logs.String()
	for _, want := range []string{"msg=refused", "remote=127.0.0.1:", `image=busybox:latest`, "user=alice", "volumes=pm-data"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// TestCatalogCheck: what the image check lets through.
func TestCatalogCheck(t *testing.T) {
	c := catalog{{Ref: catalogRef, Digest: catalogID}, {Ref: unpinned}}
	local := func(_ context.Context, ref string) (string, error) {
		if ref == unpinned {
			return otherID, nil
		}
		return "", errors.New("no such image")
	}
	for _, ok := range []LaunchRequest{
		{Image: catalogRef},
		{Image: catalogRef, Digest: catalogID},
		{Digest: catalogID},
		{Image: unpinned},
		{Image: unpinned, Digest: otherID}, // what the reference is on this machine
	} {
		if err := c.check(context.Background(), ok, local); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for _, bad := range []LaunchRequest{
		{Image: "busybox"},
		{Image: catalogRef, Digest: otherID},
		{Digest: otherID},
		{Image: unpinned, Digest: catalogID},
		{Image: "busybox", Digest: catalogID},
	} {
		if err := c.check(context.Background(), bad, local); !errors.Is(err, ErrForbidden) {
			t.Errorf("%+v: %v, want ErrForbidden", bad, err)
		}
	}
	if err := (catalog{}).check(context.Background(), LaunchRequest{Image: catalogRef}, local); !errors.Is(err, ErrForbidden) {
		t.Errorf("an empty catalog let %s through: %v", catalogRef, err)
	}
}

// TestLaunchCannotNameAnotherUsersVolume: a request names its per-user
// volumes by user and volume name only; crafted names are refused before
// Docker is asked; names that joined up to another user's volume (user
// "alice-pm" + volume "data" = alice's "pm-data") no longer meet; and a
// volume under a user's volume name labelled for anyone else is refused,
// before any container is created.
func TestLaunchCannotNameAnotherUsersVolume(t *testing.T) {
	opts := HandlerOptions{Token: testToken, Images: []Image{{Ref: catalogRef, Digest: catalogID}}}
	with := func(user, vol string) LaunchRequest {
		r := catalogLaunch
		r.User, r.Volumes = user, []Volume{{Name: vol, Path: "/data", PerUser: true}}
		return r
	}
	t.Run("crafted names", func(t *testing.T) {
		srv, fd, _ := newTestAgent(t, "upc", opts)
		for _, c := range []struct {
			req  LaunchRequest
			want string
		}{
			{with("alice", "../upc-upc-alice-pm-data"), "volumes[0].name"},
			{with("alice", "upc-upc-alice-pm-data/x"), "volumes[0].name"},
			{with("alice", "/var/lib/docker/volumes/upc-upc-alice-pm-data"), "volumes[0].name"},
			{with("alice", "PM-data"), "volumes[0].name"},
			{with("alice", ""), "volumes[0].name"},
			{with("../alice", "pm-data"), "user:"},
			{with("bob/../alice", "pm-data"), "user:"},
			{with("bob alice", "pm-data"), "user:"},
			{with("", "pm-data"), "user:"},
			{with("-alice", "pm-data"), "user:"},
		} {
			code, msg := call(t, "POST", srv.URL+"/v1/containers", "Bearer "+testToken, c.req)
			if code != http.StatusBadRequest || !strings.Contains(msg, c.want) {
				t.Errorf("user %q volume %q: %d %q, want 400 %q", c.req.User, c.req.Volumes[0].Name, code, msg, c.want)
			}
		}
		if ch := fd.Changes(); len(ch) > 0 {
			t.Errorf("refused launches reached Docker: %q", ch)
		}
	})
	// Names cannot meet: "alice-pm"'s "data" and "alice"'s "pm-data" join
	// up the same, but VolumeName hashes the three names apart; alice's
	// volume of the days before the hash is not touched.
	t.Run("joined names", func(t *testing.T) {
		if a, b := VolumeName("upc", "alice-pm", "data"), VolumeName("upc", "alice", "pm-data"); a == b {
			t.Fatalf("VolumeName collides: %s", a)
		}
		if a, b := VolumeName("upc-upc", "alice", "data"), VolumeName("upc", "upc-alice", "data"); a == b {
			t.Fatalf("VolumeName collides across agents: %s", a)
		}
		srv, fd, _ := newTestAgent(t, "upc", opts)
		legacy := LegacyVolumeName("upc", "alice", "pm-data")
		fd.volumes[legacy] = map[string]string{LabelUser: "alice", LabelVolume: "pm-data", LabelAgent: "upc"}
		if legacy != LegacyVolumeName("upc", "alice-pm", "data") {
			t.Fatal("the legacy names do not meet: the case is moot")
		}
		code, msg := call(t, "POST", srv.URL+"/v1/containers", "Bearer "+testToken, with("alice-pm", "data"))
		// The fake engine creates no containers: 500 after the volume is made.
		if code == http.StatusForbidden || code == http.StatusBadRequest {
			t.Fatalf("%d %q, want the launch to reach container creation", code, msg)
		}
		fd.mu.Lock()
		defer fd.mu.Unlock()
		if l := fd.volumes[VolumeName("upc", "alice-pm", "data")]; l[LabelUser] != "alice-pm" {
			t.Errorf("alice-pm's volume was not made under its own name: %v", fd.volumes)
		}
		if l := fd.volumes[legacy]; l[LabelUser] != "alice" {
			t.Errorf("alice's volume changed: %v", l)
		}
	})
	for _, c := range []struct {
		name      string
		agent     string
		owner     map[string]string
		user, vol string
	}{
		{"another user's labels", "upc",
			map[string]string{LabelUser: "alice", LabelVolume: "pm-data", LabelAgent: "upc"}, "alice-pm", "data"},
		{"another volume's labels", "upc",
			map[string]string{LabelUser: "alice-pm", LabelVolume: "pm-data", LabelAgent: "upc"}, "alice-pm", "data"},
		{"another agent's volume", "upc",
			map[string]string{LabelUser: "alice-pm", LabelVolume: "data", LabelAgent: "upc-upc"}, "alice-pm", "data"},
		{"a volume UPC did not make", "upc", map[string]string{}, "alice", "pm-data"},
	} {
		// Someone made a volume under the name the user's would have: the
		// labels say whose it is, and a launch will not mount it.
		t.Run(c.name, func(t *testing.T) {
			srv, fd, logs := newTestAgent(t, c.agent, opts)
			existing := VolumeName(c.agent, c.user, c.vol)
			fd.volumes[existing] = c.owner
			code, msg := call(t, "POST", srv.URL+"/v1/containers", "Bearer "+testToken, with(c.user, c.vol))
			want := fmt.Sprintf("volume %s is not user %s's volume %s", existing, c.user, c.vol)
			if code != http.StatusForbidden || !strings.Contains(msg, want) {
				t.Fatalf("%d %q, want 403 %q", code, msg, want)
			}
			for _, ch := range fd.Changes() {
				if ch != "POST /volumes/create" {
					t.Errorf("a refused launch went on to %s", ch)
				}
			}
			if !strings.Contains(logs.String(), "refused a volume of another user") {
				t.Errorf("not logged:\n%s", logs)
			}
		})
	}
}

// TestLaunchRefusesASwappedImage: once the catalog's reference resolves to
// another image than its pin (someone tagged another image upc/pm:test), a
// launch is refused with 403 naming the reference, what it resolves to and
// the pin, over HTTP and in process (the router's local machine) alike;
// nothing is created, and the pinned image is not run in its place.
func TestLaunchRefusesASwappedImage(t *testing.T) {
	srv, fd, logs := newTestAgent(t, "upc", HandlerOptions{Token: testToken, Images: []Image{{Ref: catalogRef, Digest: catalogID}}})
	fd.mu.Lock()
	fd.images[catalogRef] = otherID
	fd.mu.Unlock()
	want := "image " + catalogRef + " now resolves to " + otherID + ", not the pinned " + catalogID
	code, msg := call(t, "POST", srv.URL+"/v1/containers", "Bearer "+testToken, catalogLaunch)
	if code != http.StatusForbidden || !strings.Contains(msg, want) {
		t.Fatalf("%d %q, want 403 %q", code, msg, want)
	}
	cli, err := client.New(client.WithHost(strings.Replace(fakeHost(t, fd), "http://", "tcp://", 1)), client.WithAPIVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	e, err := NewEngine(cli, Options{Name: "local"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Launch(context.Background(), catalogLaunch); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), want) {
		t.Fatalf("in process: %v, want ErrForbidden %q", err, want)
	}
	if ch := fd.Changes(); len(ch) > 0 {
		t.Errorf("refused launches reached Docker: %q", ch)
	}
	for _, w := range []string{"refused a swapped image", "resolves_to=" + otherID, "pinned=" + catalogID} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, logs)
		}
	}
}

// fakeHost serves fd on a new server and returns its URL.
func fakeHost(t *testing.T, fd *fakeDocker) string {
	srv := httptest.NewServer(fd)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestVolumeListReadsOlderAgents: agents before UserVolume answered bare
// names; a router reading one still finds the user's volumes.
func TestVolumeListReadsOlderAgents(t *testing.T) {
	var l VolumeList
	if err := json.Unmarshal([]byte(`{"volumes": ["upc-a-alice-data", {"name": "upc-a-bob-data-00", "volume": "data"}]}`), &l); err != nil {
		t.Fatal(err)
	}
	want := []UserVolume{{Name: "upc-a-alice-data"}, {Name: "upc-a-bob-data-00", Volume: "data"}}
	if !slices.Equal(l.Volumes, want) {
		t.Errorf("read %+v, want %+v", l.Volumes, want)
	}
	if err := json.Unmarshal([]byte(`{"volumes": [3]}`), &l); err == nil {
		t.Error("a number read as a volume")
	}
}

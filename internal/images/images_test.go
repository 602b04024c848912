package images

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/e-mission/upc/conf"
)

func TestRefAndTagSafe(t *testing.T) {
	for _, tc := range []struct{ name, version, want string }{
		{"pm", "v0.1.0", "upc/pm:v0.1.0"},
		{"router", "v0.1.0-3-gabc-dirty", "upc/router:v0.1.0-3-gabc-dirty"},
		{"pm", "feature/x+y", "upc/pm:feature-x-y"},
		{"pm", "", "upc/pm:dev"},
		{"pm", "..", "upc/pm:dev"},
	} {
		if got := Ref(tc.name, tc.version); got != tc.want {
			t.Errorf("Ref(%q, %q) = %q, want %q", tc.name, tc.version, got, tc.want)
		}
	}
}

func TestDockerfileIsScratch(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"pm", "FROM scratch\nCOPY upc-pm /upc-pm\n" +
			"COPY --chown=65532:65532 data /data\nCOPY --chown=65532:65532 tmp /tmp\n" +
			"USER 65532:65532\nENTRYPOINT [\"/upc-pm\"]\n"},
		// The agent drives the Docker socket, root's: it keeps root.
		{"agent", "FROM scratch\nCOPY upc-agent /upc-agent\nENTRYPOINT [\"/upc-agent\"]\n"},
	} {
		if got := Dockerfile(tc.name); got != tc.want {
			t.Errorf("Dockerfile(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCheckStaticRejectsDynamic(t *testing.T) {
	// /bin/sh on Debian is dynamically linked: exactly what scratch cannot run.
	if err := CheckStatic("/bin/sh"); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("CheckStatic(/bin/sh) = %v, want a dynamically-linked error", err)
	}
	if err := CheckStatic("images.go"); err == nil {
		t.Error("CheckStatic(images.go) succeeded on a non-ELF file")
	}
}

func TestManifestRoundTripAndPin(t *testing.T) {
	id := "sha256:" + strings.Repeat("ab", 32)
	m := &Manifest{Version: "v1", Images: map[string]Image{
		"pm":    {Ref: "upc/pm:v1", ID: id},
		"count": {Ref: "upc/count:v1", ID: id},
	}}
	path := filepath.Join(t.TempDir(), "build", "images.json")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := LoadManifest(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != "v1" || got.Images["pm"] != m.Images["pm"] || len(got.Images) != 2 {
		t.Errorf("loaded %+v", got)
	}
	cat, err := conf.DefaultCatalog()
	if err != nil {
		t.Fatal(err)
	}
	unpinned := got.Pin(cat)
	if strings.Join(unpinned, ",") != "pipeline,metrics" {
		t.Errorf("unpinned = %v", unpinned)
	}
	pm, _ := cat.Lookup("PM")
	if pm.Image != "upc/pm:v1" || pm.Digest != id {
		t.Errorf("pm = %+v", pm)
	}
	if err := cat.Validate(); err != nil {
		t.Errorf("pinned catalog does not validate: %v", err)
	}
}

func TestManifestInvalid(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, body, want string }{
		{"unknown", `{"version":"v","images":{},"extra":1}`, `unknown field "extra"`},
		{"noversion", `{"images":{}}`, "version: required"},
		{"badid", `{"version":"v","images":{"pm":{"ref":"upc/pm:v","id":"abc"}}}`, `images["pm"].id`},
		{"noref", `{"version":"v","images":{"pm":{"id":"sha256:` + strings.Repeat("0", 64) + `"}}}`, `images["pm"].ref: required`},
		{"badname", `{"version":"v","images":{"P M":{"ref":"x","id":"sha256:` + strings.Repeat("0", 64) + `"}}}`, "not a service name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".json")
			os.WriteFile(p, []byte(tc.body), 0o644)
			_, err := LoadManifest(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadManifest = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return dir
}

// TestIntegrationBuildAndRun needs the Docker engine: it compiles a small
// server, builds its FROM scratch image through the SDK, runs it and asks it.
func TestIntegrationBuildAndRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, err := NewDocker()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Ping(ctx, client.PingOptions{}); err != nil {
		t.Fatalf("docker engine not reachable (this test needs /var/run/docker.sock): %v", err)
	}

	var rnd [4]byte
	rand.Read(rnd[:])
	ver := "imgtest-" + hex.EncodeToString(rnd[:])
	bin, err := Compile(ctx, CompileOptions{ModuleDir: moduleRoot(t), OutDir: t.TempDir(), Version: ver},
		"./internal/images/testdata/hello", Binary("hello"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := Build(ctx, d, BuildOptions{Name: "hello", Binary: bin, Version: ver, Labels: map[string]string{"upc.test": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := d.ImageRemove(context.Background(), im.ID, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Errorf("remove image: %v", err)
		}
	})
	if im.Ref != "upc/hello:"+ver || !strings.HasPrefix(im.ID, "sha256:") {
		t.Fatalf("image = %+v", im)
	}

	ins, err := d.ImageInspect(ctx, im.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if ins.ID != im.ID {
		t.Errorf("tag points at %s, Build returned %s", ins.ID, im.ID)
	}
	// FROM scratch + three COPYs: the binary, /data and /tmp; no base image.
	if ins.RootFS.Type != "layers" || len(ins.RootFS.Layers) != 3 {
		t.Errorf("image has layers %v, want three (the binary, /data, /tmp)", ins.RootFS.Layers)
	}
	if ins.Config.User != "65532:65532" {
		t.Errorf("image user = %q, want 65532:65532", ins.Config.User)
	}
	for k, v := range map[string]string{LabelImage: "hello", LabelVersion: ver, "upc.test": "1"} {
		if ins.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, ins.Config.Labels[k], v)
		}
	}
	if strings.Join(ins.Config.Entrypoint, " ") != "/upc-hello" {
		t.Errorf("entrypoint = %v", ins.Config.Entrypoint)
	}

	port := network.MustParsePort("8080/tcp")
	// A new named volume at /data takes the image's ownership of /data, so
	// the non-root user writes it on an otherwise read-only root.
	vol, err := d.VolumeCreate(ctx, client.VolumeCreateOptions{Name: "upc-imgtest-" + hex.EncodeToString(rnd[:]), Labels: map[string]string{"upc.test": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := d.VolumeRemove(context.Background(), vol.Volume.Name, client.VolumeRemoveOptions{Force: true}); err != nil {
			t.Errorf("remove volume: %v", err)
		}
	})
	created, err := d.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{
			Image:        im.ID,
			Labels:       map[string]string{"upc.test": "1"},
			ExposedPorts: network.PortSet{port: {}},
		},
		HostConfig: &container.HostConfig{
			PortBindings:   network.PortMap{port: {{HostIP: netip.MustParseAddr("127.0.0.1")}}},
			ReadonlyRootfs: true,
			Mounts:         []mount.Mount{{Type: mount.TypeVolume, Source: vol.Volume.Name, Target: "/data"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := d.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
			t.Errorf("remove container: %v", err)
		}
	})
	if _, err := d.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	ci, err := d.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bindings := ci.Container.NetworkSettings.Ports[port]
	if len(bindings) == 0 || bindings[0].HostPort == "" {
		t.Fatalf("no host port published: %+v", ci.Container.NetworkSettings.Ports)
	}
	url := "http://127.0.0.1:" + bindings[0].HostPort + "/"

	var body string
	deadline := time.Now().Add(20 * time.Second)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer from %s within 20s: %v %q", url, err, body)
		}
		time.Sleep(wait)
	}
	if strings.TrimSpace(body) != "hello "+ver {
		t.Errorf("answer = %q, want %q", body, "hello "+ver)
	}
	resp, err := http.Get(url + "probe")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// /tmp is the image's, under a read-only root here: not writable.
	if want := "uid=65532 gid=65532 /data=true /tmp=false /=false"; strings.TrimSpace(string(b)) != want {
		t.Errorf("probe = %q, want %q", b, want)
	}
}

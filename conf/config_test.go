package conf

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// wantErr names, for every testdata/invalid-* file, the substrings its error
// must contain (the field and the problem).
var wantErr = map[string][]string{
	"invalid-unknown-field.json":               {`unknown field "unknown_field"`},
	"invalid-port-range.json":                  {"service_router_port: 70000 is not a port"},
	"invalid-port-type.json":                   {`field "swarm_port"`, "want int"},
	"invalid-mode.json":                        {`upc_mode: "swarm" is not one of docker, kubernetes`},
	"invalid-docker-warm-pool.json":            {"docker.warm_pool: -1 is not a pool size (0-1000)"},
	"invalid-docker-warm-pool-kubernetes.json": {"docker.warm_pool: is the Docker backend's pool, and upc_mode is kubernetes"},
	"invalid-docker-warm-pool-no-ca.json":      {"docker.warm_pool: needs router.ca_cert_path"},
	"invalid-weight-negative.json":             {`machines["127.0.0.1"]: weight -1`},
	"invalid-weight-type.json":                 {`field "machines`, "want float64"},
	"invalid-no-machines.json":                 {"machines: at least one machine"},
	"invalid-local-mixed.json":                 {`machines["local"]`, "cannot be mixed"},
	"invalid-machine-scheme.json":              {`machines["http://127.0.0.1"]`, "without a scheme"},
	"invalid-tls-no-bundle.json":               {"certificate_bundle_path: required"},
	"invalid-agent-tls-no-cert.json":           {"agent.tls_cert_path"},
	"invalid-endpoint-path.json":               {`pause_endpoint: "pause" must be a path`},
	"invalid-endpoint-duplicate.json":          {"pause_endpoint and delete_service_endpoint share"},
	"invalid-duration.json":                    {`field "router.launch_timeout"`, `"soon"`},
	"invalid-duration-negative.json":           {"router.launch_timeout: -5s must be positive"},
	"invalid-idle-interval.json":               {"router.idle_interval: -1s is negative"},
	"invalid-listen.json":                      {`router.listen: "4430" is not host:port`},
	"invalid-publish-ip.json":                  {`agent.publish_ip: "localhost" is not an IP`},
	"invalid-network.json":                     {`network: "bad network"`},
	"invalid-docker-network.json":              {`docker.network_mode: "hostnet" is not one of bridge, host`, `docker.host_ports: "30000-2000": LOW is above HIGH`},
	"invalid-docker-ports-low.json":            {`docker.host_ports: "80-90": ports must lie in 1024-65535`},
	"invalid-docker-ports-form.json":           {`docker.host_ports: "20000" is not LOW-HIGH`},
	"invalid-not-object.json":                  {"parse"},
	"invalid-trailing.json":                    {"parse"},
	"invalid-yaml-syntax.yaml":                 {"parse"},
	"invalid-router-tokens.json":               {"router.token_file: is the deprecated name of router.admin_token_file", `router.users_file: "admin.token" is also the admin token file`},
	"invalid-kubernetes-pm-policy.json": {`kubernetes.pm_router_pods: "bad key!" is not a label key`, `kubernetes.pm_router_pods: app: "-x" is not a label value`,
		`kubernetes.pm_clients[0]: "10.0.0.1/8" is not a network`, `kubernetes.pm_clients[1]: "router" is not a network`},
	"invalid-kubernetes-simulated-docker.json": {"kubernetes.simulated_nodes: is the Kubernetes backend's, and upc_mode is docker"},
	"invalid-many-problems.json":               {"upc_port: 70000", "swarm_port: -1", `upc_mode: "x"`, `network: "!"`},
}

func TestLoadTestdata(t *testing.T) {
	files, err := filepath.Glob("testdata/*-*")
	if err != nil {
		t.Fatal(err)
	}
	var nValid, nInvalid int
	for _, f := range files {
		name := filepath.Base(f)
		switch {
		case strings.HasPrefix(name, "valid-"):
			nValid++
			t.Run(name, func(t *testing.T) {
				if _, err := Load(f); err != nil {
					t.Fatalf("Load: %v", err)
				}
			})
		case strings.HasPrefix(name, "invalid-"):
			nInvalid++
			t.Run(name, func(t *testing.T) {
				want, ok := wantErr[name]
				if !ok {
					t.Fatalf("no expected error listed for %s in wantErr", name)
				}
				_, err := Load(f)
				if err == nil {
					t.Fatal("Load succeeded, want an error")
				}
				for _, w := range want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
			})
		}
	}
	if nValid < 3 || nInvalid != len(wantErr) {
		t.Fatalf("found %d valid and %d invalid files, want >= 3 and %d", nValid, nInvalid, len(wantErr))
	}
}

func TestOriginalFieldNames(t *testing.T) {
	c, err := Load("testdata/valid-original-names.json")
	if err != nil {
		t.Fatal(err)
	}
	if c.ServiceRouterIP != "127.0.1.1" || c.ServiceRouterPort != 4430 || c.UPCPort != 8123 || c.SwarmPort != 54321 {
		t.Errorf("router/ports: %+v", c)
	}
	if c.UPCMode != ModeKubernetes {
		t.Errorf("upc_mode = %q", c.UPCMode)
	}
	if c.Machines["192.168.99.100"] != 1 || len(c.Machines) != 1 {
		t.Errorf("machines = %v", c.Machines)
	}
	if c.DeleteServiceEndpoint != "/kill" || c.PrivacyBudgetEndpoint != "/privacy_budget" || c.CloudKeyEndpoint != "/cloud/key" {
		t.Errorf("endpoints: %+v", c.Endpoints)
	}
	ms := c.MachineList()
	if len(ms) != 1 || ms[0].URL != "http://192.168.99.100:54321" || ms[0].Local {
		t.Errorf("MachineList = %+v", ms)
	}
	if got := c.RouterURL(); got != "http://127.0.1.1:4430" {
		t.Errorf("RouterURL = %q", got)
	}
}

func TestDefaults(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.Endpoints != DefaultEndpoints {
		t.Errorf("endpoints = %+v", c.Endpoints)
	}
	ms := c.MachineList()
	if len(ms) != 1 || !ms[0].Local || ms[0].URL != "" {
		t.Errorf("default machines = %+v", ms)
	}
	if c.Router.Listen != ":4430" || c.Agent.Listen != "" || c.Router.LaunchTimeout.D() != time.Minute {
		t.Errorf("router/agent defaults: %+v %+v", c.Router, c.Agent)
	}
	if lo, hi, err := c.Docker.PortRange(); c.Docker.NetworkMode != NetworkBridge || err != nil || lo != 20000 || hi != 23999 {
		t.Errorf("docker defaults: %+v (%d-%d, %v), want bridge, 20000-23999", c.Docker, lo, hi, err)
	}
	if h, err := Load("testdata/valid-docker-host.yaml"); err != nil || h.Docker.NetworkMode != NetworkHost || h.Docker.HostPorts != "41000-41099" {
		t.Errorf("docker host mode from a file: %+v, %v", h, err)
	}
	// Values written in a file win over defaults.
	c2, err := Parse([]byte(`{"service_router_port": 9000, "router": {"launch_timeout": "5s"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c2.Router.Listen != ":9000" || c2.Router.LaunchTimeout.D() != 5*time.Second {
		t.Errorf("derived defaults: %+v", c2.Router)
	}
}

func TestThreeMachines(t *testing.T) {
	c, err := Load("testdata/valid-three-machines.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ms := c.MachineList()
	want := []Machine{
		{Address: "10.0.0.11", URL: "https://10.0.0.11:54321", Weight: 2},
		{Address: "10.0.0.12", URL: "https://10.0.0.12:54321", Weight: 1},
		{Address: "10.0.0.13:6000", URL: "https://10.0.0.13:6000", Weight: 1.5},
	}
	if len(ms) != len(want) {
		t.Fatalf("MachineList = %+v", ms)
	}
	for i := range want {
		if ms[i] != want[i] {
			t.Errorf("machine %d = %+v, want %+v", i, ms[i], want[i])
		}
	}
	if c.RouterURL() != "https://router.example.internal:4430" {
		t.Errorf("RouterURL = %q", c.RouterURL())
	}
	if c.Router.LaunchTimeout.D() != 90*time.Second {
		t.Errorf("launch_timeout = %v", c.Router.LaunchTimeout.D())
	}
}

func TestSamples(t *testing.T) {
	for _, tc := range []struct {
		file     string
		machines int
		local    bool
	}{
		{"samples/one-machine.yaml", 1, true},
		{"samples/three-machines.yaml", 3, false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c, err := Load(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			ms := c.MachineList()
			if len(ms) != tc.machines || ms[0].Local != tc.local {
				t.Errorf("machines = %+v", ms)
			}
			if _, err := c.LoadCatalog(); err != nil {
				t.Errorf("catalog: %v", err)
			}
		})
	}
}

// A deployment adds its own service by adding a catalog entry: no code changes.
func TestCatalogDeploymentAddsService(t *testing.T) {
	c, err := Load("testdata/valid-catalog-extra.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cat, err := c.LoadCatalog()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"calendar", "Calendar", "PM", "pipeline", "Metrics", "count"} {
		if _, ok := cat.Lookup(name); !ok {
			t.Errorf("Lookup(%q) found nothing", name)
		}
	}
	s, _ := cat.Lookup("Calendar")
	if s.Name != "calendar" || s.Image != "example/calendar:1.0" || s.Port != 9000 || s.Env["TZ"] != "UTC" {
		t.Errorf("calendar = %+v", s)
	}
	// The built-in catalog does not have it.
	def, err := DefaultCatalog()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := def.Lookup("calendar"); ok {
		t.Error("built-in catalog has calendar")
	}
	// The same entry written in a temporary file (a deployment's own catalog).
	dir := t.TempDir()
	b, _ := os.ReadFile("testdata/catalog-extra.json")
	os.WriteFile(filepath.Join(dir, "mine.json"), b, 0o644)
	os.WriteFile(filepath.Join(dir, "upc.yaml"), []byte("catalog: mine.json\n"), 0o644)
	c2, err := Load(filepath.Join(dir, "upc.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cat2, err := c2.LoadCatalog(); err != nil {
		t.Fatal(err)
	} else if _, ok := cat2.Lookup("calendar"); !ok {
		t.Error("calendar not found through a relative catalog path")
	}
}

func TestCatalogBuiltin(t *testing.T) {
	cat, err := DefaultCatalog()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pm", "pipeline", "metrics", "count"}
	if got := cat.Names(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Names = %v, want %v", got, want)
	}
	// The original spells services PM, Pipeline, Metrics, Count.
	for _, orig := range []string{"PM", "Pipeline", "Metrics", "Count"} {
		if s, ok := cat.Lookup(orig); !ok || s.Name != strings.ToLower(orig) {
			t.Errorf("Lookup(%q) = %+v, %v", orig, s, ok)
		}
	}
	if _, ok := cat.Lookup("calendar"); ok {
		t.Error("Lookup(calendar) found a service")
	}
}

// A catalog entry without a port listens on upc_port, as in the original.
func TestCatalogPortDefaultsToUPCPort(t *testing.T) {
	c, err := Load("testdata/valid-catalog-noport.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cat, err := c.LoadCatalog()
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := cat.Lookup("calendar"); s.Port != 9123 {
		t.Errorf("calendar port = %d, want upc_port 9123", s.Port)
	}
	if s, _ := cat.Lookup("pm"); s.Port != 8080 {
		t.Errorf("pm port = %d, want its own 8080", s.Port)
	}
	// Read on its own, the same catalog is missing a port.
	if _, err := LoadCatalog("testdata/catalog-noport.yaml"); err == nil || !strings.Contains(err.Error(), "services[0].port") {
		t.Errorf("LoadCatalog = %v, want a port error", err)
	}
}

// A catalog file named outside the config (a command's flag) takes the
// config's defaults too: it is the catalog the config gives when it names it.
func TestCatalogFileTakesTheConfigsDefaults(t *testing.T) {
	c, err := Load("testdata/valid-catalog-noport.yaml")
	if err != nil {
		t.Fatal(err)
	}
	named, err := c.LoadCatalog()
	if err != nil {
		t.Fatal(err)
	}
	file, err := c.LoadCatalogFile("testdata/catalog-noport.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(file, named) {
		t.Errorf("LoadCatalogFile = %+v, LoadCatalog = %+v", file, named)
	}
	if _, err := c.LoadCatalogFile("testdata/nope.yaml"); err == nil || !strings.Contains(err.Error(), "read catalog") {
		t.Errorf("LoadCatalogFile(missing) = %v, want a read error", err)
	}
}

// TestRouterAccessFields: the access fields load, and token_file is the
// deprecated alias of admin_token_file.
func TestRouterAccessFields(t *testing.T) {
	c, err := Load("testdata/valid-router-access.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Router.UsersFile != "/var/lib/upc/users.json" || c.Router.AdminToken() != "/etc/upc/admin.token" || !c.Router.InsecureLegacy {
		t.Fatalf("router access fields: %+v", c.Router)
	}
	old, err := Parse([]byte(`{"router": {"token_file": "router.token"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if old.Router.AdminToken() != "router.token" || old.Router.InsecureLegacy {
		t.Fatalf("token_file alias: %+v", old.Router)
	}
	same, err := Parse([]byte(`{"router": {"token_file": "a.token", "admin_token_file": "a.token"}}`))
	if err != nil || same.Router.AdminToken() != "a.token" {
		t.Fatalf("token_file equal to admin_token_file: %+v %v", same, err)
	}
}

// A service's idle policy: durations not negative, delete_after longer than
// pause_after when both are set, each problem naming its field.
func TestCatalogIdle(t *testing.T) {
	c, err := LoadCatalog("testdata/catalog-idle.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		service       string
		pause, delete time.Duration
	}{
		{"pm", 30 * time.Minute, 24 * time.Hour},
		{"count", 0, time.Hour},
		{"metrics", 10 * time.Minute, 0},
	} {
		s, _ := c.Lookup(tc.service)
		if s.Idle.PauseAfter.D() != tc.pause || s.Idle.DeleteAfter.D() != tc.delete || !s.Idle.Enabled() {
			t.Errorf("%s idle = %+v, want pause %s delete %s", tc.service, s.Idle, tc.pause, tc.delete)
		}
	}
	def, err := DefaultCatalog()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range def.Services {
		if s.Idle.Enabled() {
			t.Errorf("built-in catalog: %s has an idle policy %+v; the default is off", s.Name, s.Idle)
		}
	}

	_, err = LoadCatalog("testdata/catalog-idle-invalid.yaml")
	if err == nil {
		t.Fatal("invalid idle policies accepted")
	}
	for _, want := range []string{
		"services[0].idle.delete_after: 10m0s must be longer than pause_after (30m0s)",
		"services[1].idle.pause_after: -1s is negative",
		"services[1].idle.delete_after: -5m0s is negative",
		"services[2].idle.delete_after: 1h0m0s must be longer than pause_after (1h0m0s)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := ParseCatalog([]byte(`{"services":[{"name":"pm","image":"upc/pm","port":1,"idle":{"pause_after":30}}]}`)); err == nil || !strings.Contains(err.Error(), "pause_after") {
		t.Errorf("a number for a duration: %v", err)
	}
}

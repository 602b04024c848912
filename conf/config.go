package conf

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Mode is where the router launches instances.
type Mode string

const (
	ModeDocker     Mode = "docker"
	ModeKubernetes Mode = "kubernetes"
)

// LocalMachine is the reserved machine address meaning "the router's own
// Docker engine, driven directly with no agent": a one-machine deployment
// needs a single process.
const LocalMachine = "local"

// Gateway, as agent.advertise or agent.publish_ip, means the UPC network's
// gateway address: reachable from the host and from every container on the
// network, so instances can call each other's addresses (pipeline → PM).
const Gateway = "gateway"

// Config is the one configuration of a UPC deployment, shared by the router,
// the machine agents, the CLI and the harness. Its top-level field names are
// those of the original conf/net/machines.json.sample, so an existing
// deployment's file still loads; keys starting with "_" are comments (the
// original's "_machines_comment" etc.) and are ignored.
type Config struct {
	// ServiceRouterIP is the address clients reach the router at.
	ServiceRouterIP string `json:"service_router_ip"`
	// ServiceRouterPort is the router's port.
	ServiceRouterPort int `json:"service_router_port"`
	// ServiceRouterUseTLS makes the router serve (and clients dial) HTTPS.
	ServiceRouterUseTLS bool `json:"service_router_use_tls"`
	// UPCPort is the port a service listens on inside its container when its
	// catalog entry names none.
	UPCPort int `json:"upc_port"`
	// SwarmPort is the machine agent's port on machines whose address has none
	// (the original's per-machine swarm.py server).
	SwarmPort int `json:"swarm_port"`
	// Machines maps each machine's address ("host" or "host:port") to its
	// placement weight: a machine of weight 2 gets twice the instances of one
	// of weight 1. The address "local" is the router's own engine.
	Machines map[string]float64 `json:"machines"`
	// MachinesUseTLS makes agents and instances serve HTTPS.
	MachinesUseTLS bool `json:"machines_use_tls"`
	// CertificateBundlePath is a PEM bundle of the CAs every hop trusts.
	CertificateBundlePath string `json:"certificate_bundle_path"`
	// UPCMode is the backend: "docker" or "kubernetes".
	UPCMode Mode `json:"upc_mode"`

	// Endpoints are the original HTTP paths, flattened to the top level as in
	// the original file.
	Endpoints

	// Catalog is the path of the service catalog file; empty means the
	// built-in catalog (conf/catalog.json). Relative to the config file.
	Catalog string `json:"catalog,omitempty"`
	// Images is the image manifest (build/images.json) whose digests pin the
	// catalog's images; empty means none. Relative to the config file.
	Images string `json:"images,omitempty"`
	// Network is the Docker network every instance joins.
	Network string `json:"network,omitempty"`
	// DataDir holds state a component keeps on disk.
	DataDir string `json:"data_dir,omitempty"`
	// ResultsDir receives reports (e2e, benchmarks).
	ResultsDir string `json:"results_dir,omitempty"`

	// Router holds the router's own settings.
	Router Router `json:"router,omitempty"`
	// Agent holds the machine agent's own settings.
	Agent Agent `json:"agent,omitempty"`
	// Kubernetes holds the router's settings in kubernetes mode.
	Kubernetes Kubernetes `json:"kubernetes,omitempty"`

	// dir is the directory of the file the config came from, so relative
	// paths in it resolve next to it.
	dir string
}

// Endpoints are the original HTTP paths of the router and the PM.
type Endpoints struct {
	ServiceEndpoint           string `json:"service_endpoint"`
	PauseEndpoint             string `json:"pause_endpoint"`
	UnpauseEndpoint           string `json:"unpause_endpoint"`
	DeleteServiceEndpoint     string `json:"delete_service_endpoint"`
	DeleteAllServicesEndpoint string `json:"delete_all_services_endpoint"`
	SetupNetworkEndpoint      string `json:"setup_network_endpoint"`

	InsertEndpoint           string `json:"insert_endpoint"`
	InsertDeprecatedEndpoint string `json:"insert_deprecated_endpoint"`
	FindEndpoint             string `json:"find_endpoint"`
	FindOneEndpoint          string `json:"find_one_endpoint"`
	DeleteEndpoint           string `json:"delete_endpoint"`
	UpdateEndpoint           string `json:"update_endpoint"`
	UpdateDeprecatedEndpoint string `json:"update_deprecated_endpoint"`
	ReplaceOneEndpoint       string `json:"replace_one_endpoint"`
	CountEndpoint            string `json:"count_endpoint"`
	DistinctEndpoint         string `json:"distinct_endpoint"`
	CloudKeyEndpoint         string `json:"cloud_key_endpoint"`
	PrivacyBudgetEndpoint    string `json:"privacy_budget_endpoint"`
}

// Router is the service router's own configuration.
type Router struct {
	// Listen is the address the router binds; default ":<service_router_port>".
	Listen string `json:"listen,omitempty"`
	// TokenFile holds the bearer token clients must send; empty disables auth.
	TokenFile string `json:"token_file,omitempty"`
	// TLSCertPath and TLSKeyPath are the router's certificate when
	// service_router_use_tls is set.
	TLSCertPath string `json:"tls_cert_path,omitempty"`
	TLSKeyPath  string `json:"tls_key_path,omitempty"`
	// LaunchTimeout bounds how long a launch waits for the instance to answer.
	LaunchTimeout Duration `json:"launch_timeout,omitempty"`
	// AgentTimeout bounds one call to a machine agent.
	AgentTimeout Duration `json:"agent_timeout,omitempty"`
}

// Agent is a machine agent's own configuration.
type Agent struct {
	// Listen is the address the agent binds; default ":<swarm_port>".
	Listen string `json:"listen,omitempty"`
	// Advertise is the host instances' addresses are given with (the address
	// clients dial); "gateway" (the default) is the UPC network's gateway
	// address, which the host and every container on the network reach.
	Advertise string `json:"advertise,omitempty"`
	// PublishIP is the host IP that instance ports are published on;
	// "gateway" (the default) is the UPC network's gateway address.
	PublishIP string `json:"publish_ip,omitempty"`
	// TokenFile holds the bearer token the router must send; empty disables auth.
	TokenFile string `json:"token_file,omitempty"`
	// TLSCertPath and TLSKeyPath are the agent's certificate when
	// machines_use_tls is set.
	TLSCertPath string `json:"tls_cert_path,omitempty"`
	TLSKeyPath  string `json:"tls_key_path,omitempty"`
}

// Kubernetes configures the router's Kubernetes backend (upc_mode kubernetes).
type Kubernetes struct {
	// Kubeconfig is the router's kubeconfig; empty means $KUBECONFIG, else
	// the in-cluster ServiceAccount.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Namespace holds the instances; default "upc".
	Namespace string `json:"namespace,omitempty"`
	// NodeSelector places instance pods (e.g. {"upc.node": "real"}).
	NodeSelector map[string]string `json:"node_selector,omitempty"`
	// NodeAddress is the host in instance addresses; empty means the
	// InternalIP of the node an instance's pod first ran on.
	NodeAddress string `json:"node_address,omitempty"`
	// WarmPool is the number of ready pods kept per service; those of
	// services with per-user volumes (the PM) go to new users only.
	WarmPool map[string]int `json:"warm_pool,omitempty"`
	// StorageClass of per-user claims; empty binds each claim to a hostPath
	// volume under HostPathDir (the local cluster).
	StorageClass string `json:"storage_class,omitempty"`
	HostPathDir  string `json:"host_path_dir,omitempty"`
	// ImageByID runs pinned images by ID (nodes that hold our images).
	ImageByID bool `json:"image_by_id,omitempty"`
	// GracePeriod is the pods' termination grace period; default 1s.
	GracePeriod Duration `json:"grace_period,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("30s") in files.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string such as "1m30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: "non-string " + string(b), Type: reflectDurationType}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &json.UnmarshalTypeError{Value: "string " + strconv.Quote(s), Type: reflectDurationType}
	}
	*d = Duration(v)
	return nil
}

// Defaults of the original machines.json.sample, and ours.
const (
	DefaultServiceRouterIP   = "127.0.0.1"
	DefaultServiceRouterPort = 4430
	DefaultUPCPort           = 8123
	DefaultSwarmPort         = 54321
	DefaultNetwork           = "upc"
	DefaultLaunchTimeout     = 60 * time.Second
	DefaultAgentTimeout      = 30 * time.Second
)

// DefaultEndpoints are the original's paths.
var DefaultEndpoints = Endpoints{
	ServiceEndpoint:           "/service_request",
	PauseEndpoint:             "/pause",
	UnpauseEndpoint:           "/unpause",
	DeleteServiceEndpoint:     "/kill",
	DeleteAllServicesEndpoint: "/clear_containers",
	SetupNetworkEndpoint:      "/setup_networks",
	InsertEndpoint:            "/data/insert",
	InsertDeprecatedEndpoint:  "/data/insert-deprecated",
	FindEndpoint:              "/data/find",
	FindOneEndpoint:           "/data/find_one",
	DeleteEndpoint:            "/data/delete",
	UpdateEndpoint:            "/data/update",
	UpdateDeprecatedEndpoint:  "/data/update-deprecated",
	ReplaceOneEndpoint:        "/data/replace_one",
	CountEndpoint:             "/data/count",
	DistinctEndpoint:          "/data/distinct",
	CloudKeyEndpoint:          "/cloud/key",
	PrivacyBudgetEndpoint:     "/privacy_budget",
}

// Default returns a configuration with every default set: one machine (the
// router's own engine) in docker mode.
func Default() *Config {
	c := &Config{}
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field. It is the one place defaults live.
func (c *Config) SetDefaults() {
	if c.ServiceRouterIP == "" {
		c.ServiceRouterIP = DefaultServiceRouterIP
	}
	if c.ServiceRouterPort == 0 {
		c.ServiceRouterPort = DefaultServiceRouterPort
	}
	if c.UPCPort == 0 {
		c.UPCPort = DefaultUPCPort
	}
	if c.SwarmPort == 0 {
		c.SwarmPort = DefaultSwarmPort
	}
	if c.Machines == nil {
		c.Machines = map[string]float64{LocalMachine: 1}
	}
	if c.UPCMode == "" {
		c.UPCMode = ModeDocker
	}
	e, d := &c.Endpoints, DefaultEndpoints
	for _, p := range []struct {
		v   *string
		def string
	}{
		{&e.ServiceEndpoint, d.ServiceEndpoint},
		{&e.PauseEndpoint, d.PauseEndpoint},
		{&e.UnpauseEndpoint, d.UnpauseEndpoint},
		{&e.DeleteServiceEndpoint, d.DeleteServiceEndpoint},
		{&e.DeleteAllServicesEndpoint, d.DeleteAllServicesEndpoint},
		{&e.SetupNetworkEndpoint, d.SetupNetworkEndpoint},
		{&e.InsertEndpoint, d.InsertEndpoint},
		{&e.InsertDeprecatedEndpoint, d.InsertDeprecatedEndpoint},
		{&e.FindEndpoint, d.FindEndpoint},
		{&e.FindOneEndpoint, d.FindOneEndpoint},
		{&e.DeleteEndpoint, d.DeleteEndpoint},
		{&e.UpdateEndpoint, d.UpdateEndpoint},
		{&e.UpdateDeprecatedEndpoint, d.UpdateDeprecatedEndpoint},
		{&e.ReplaceOneEndpoint, d.ReplaceOneEndpoint},
		{&e.CountEndpoint, d.CountEndpoint},
		{&e.DistinctEndpoint, d.DistinctEndpoint},
		{&e.CloudKeyEndpoint, d.CloudKeyEndpoint},
		{&e.PrivacyBudgetEndpoint, d.PrivacyBudgetEndpoint},
	} {
		if *p.v == "" {
			*p.v = p.def
		}
	}
	if c.Network == "" {
		c.Network = DefaultNetwork
	}
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	if c.ResultsDir == "" {
		c.ResultsDir = "results"
	}
	if c.Router.Listen == "" {
		c.Router.Listen = ":" + strconv.Itoa(c.ServiceRouterPort)
	}
	if c.Router.LaunchTimeout == 0 {
		c.Router.LaunchTimeout = Duration(DefaultLaunchTimeout)
	}
	if c.Router.AgentTimeout == 0 {
		c.Router.AgentTimeout = Duration(DefaultAgentTimeout)
	}
	if c.Agent.Listen == "" {
		c.Agent.Listen = ":" + strconv.Itoa(c.SwarmPort)
	}
	if c.Agent.Advertise == "" {
		c.Agent.Advertise = Gateway
	}
	if c.Agent.PublishIP == "" {
		c.Agent.PublishIP = Gateway
	}
}

var networkRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// Validate reports every problem at once, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	port := func(field string, p int) {
		if p < 1 || p > 65535 {
			bad(field, "%d is not a port (1-65535)", p)
		}
	}
	if !isHost(c.ServiceRouterIP) {
		bad("service_router_ip", "%q is not a host name or IP address", c.ServiceRouterIP)
	}
	port("service_router_port", c.ServiceRouterPort)
	port("upc_port", c.UPCPort)
	port("swarm_port", c.SwarmPort)
	switch c.UPCMode {
	case ModeDocker, ModeKubernetes:
	default:
		bad("upc_mode", "%q is not one of docker, kubernetes", c.UPCMode)
	}
	if len(c.Machines) == 0 {
		bad("machines", "at least one machine is needed")
	}
	for _, addr := range slices.Sorted(mapKeys(c.Machines)) {
		w := c.Machines[addr]
		field := fmt.Sprintf("machines[%q]", addr)
		if !(w > 0) || w > 1e6 {
			bad(field, "weight %v must be a positive number", w)
		}
		if addr == LocalMachine {
			if len(c.Machines) > 1 {
				bad(field, "%q (the router's own engine) cannot be mixed with agent machines", LocalMachine)
			}
			continue
		}
		if err := checkHostPort(addr); err != nil {
			bad(field, "%v", err)
		}
	}
	if c.ServiceRouterUseTLS || c.MachinesUseTLS {
		if c.CertificateBundlePath == "" {
			bad("certificate_bundle_path", "required when service_router_use_tls or machines_use_tls is set")
		}
	}
	if c.ServiceRouterUseTLS && (c.Router.TLSCertPath == "" || c.Router.TLSKeyPath == "") {
		bad("router.tls_cert_path", "router.tls_cert_path and router.tls_key_path are required when service_router_use_tls is set")
	}
	if c.MachinesUseTLS && (c.Agent.TLSCertPath == "" || c.Agent.TLSKeyPath == "") {
		bad("agent.tls_cert_path", "agent.tls_cert_path and agent.tls_key_path are required when machines_use_tls is set")
	}
	for _, ep := range c.Endpoints.fields() {
		if !strings.HasPrefix(ep.path, "/") || strings.ContainsAny(ep.path, " ?#{}") {
			bad(ep.name, "%q must be a path starting with / (no spaces, query or patterns)", ep.path)
		}
	}
	if dup := c.Endpoints.duplicate(); dup != "" {
		bad("endpoints", "%s", dup)
	}
	if !networkRE.MatchString(c.Network) {
		bad("network", "%q is not a Docker network name", c.Network)
	}
	for _, l := range []struct{ field, addr string }{{"router.listen", c.Router.Listen}, {"agent.listen", c.Agent.Listen}} {
		if _, p, err := net.SplitHostPort(l.addr); err != nil {
			bad(l.field, "%q is not host:port: %v", l.addr, err)
		} else if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
			bad(l.field, "%q has a bad port", l.addr)
		}
	}
	if c.Agent.Advertise != Gateway && !isHost(c.Agent.Advertise) {
		bad("agent.advertise", "%q is not a host name or IP address (nor %q)", c.Agent.Advertise, Gateway)
	}
	if c.Agent.PublishIP != Gateway && net.ParseIP(c.Agent.PublishIP) == nil {
		bad("agent.publish_ip", "%q is not an IP address (nor %q)", c.Agent.PublishIP, Gateway)
	}
	if c.Router.LaunchTimeout <= 0 {
		bad("router.launch_timeout", "%s must be positive", c.Router.LaunchTimeout.D())
	}
	if c.Router.AgentTimeout <= 0 {
		bad("router.agent_timeout", "%s must be positive", c.Router.AgentTimeout.D())
	}
	for svc, n := range c.Kubernetes.WarmPool {
		if n < 0 || n > 1000 {
			bad("kubernetes.warm_pool", "%s: %d is not a pool size (0-1000)", svc, n)
		}
	}
	if c.Kubernetes.GracePeriod < 0 {
		bad("kubernetes.grace_period", "%s is negative", c.Kubernetes.GracePeriod.D())
	}
	if c.Kubernetes.StorageClass == "" && c.Kubernetes.HostPathDir != "" && !filepath.IsAbs(c.Kubernetes.HostPathDir) {
		bad("kubernetes.host_path_dir", "%q must be absolute", c.Kubernetes.HostPathDir)
	}
	return errors.Join(errs...)
}

func checkHostPort(addr string) error {
	host := addr
	if strings.Contains(addr, "://") {
		return fmt.Errorf("%q must be host or host:port, without a scheme (machines_use_tls picks it)", addr)
	}
	if h, p, err := net.SplitHostPort(addr); err == nil {
		host = h
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has a bad port", addr)
		}
	}
	if !isHost(host) {
		return fmt.Errorf("%q is not a host name or IP address", addr)
	}
	return nil
}

// isHost accepts an IP address or something shaped like a host name.
func isHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	return hostRE.MatchString(h)
}

var hostRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,252})$`)

var reflectDurationType = reflect.TypeFor[time.Duration]()

// decodeLoose decodes JSON or YAML without rejecting unknown fields.
func decodeLoose(b []byte, v any) error {
	j, err := toJSON(b)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return errors.New("parse: trailing data after the document")
	}
	return nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

type endpointField struct{ name, path string }

func (e *Endpoints) fields() []endpointField {
	return []endpointField{
		{"service_endpoint", e.ServiceEndpoint},
		{"pause_endpoint", e.PauseEndpoint},
		{"unpause_endpoint", e.UnpauseEndpoint},
		{"delete_service_endpoint", e.DeleteServiceEndpoint},
		{"delete_all_services_endpoint", e.DeleteAllServicesEndpoint},
		{"setup_network_endpoint", e.SetupNetworkEndpoint},
		{"insert_endpoint", e.InsertEndpoint},
		{"insert_deprecated_endpoint", e.InsertDeprecatedEndpoint},
		{"find_endpoint", e.FindEndpoint},
		{"find_one_endpoint", e.FindOneEndpoint},
		{"delete_endpoint", e.DeleteEndpoint},
		{"update_endpoint", e.UpdateEndpoint},
		{"update_deprecated_endpoint", e.UpdateDeprecatedEndpoint},
		{"replace_one_endpoint", e.ReplaceOneEndpoint},
		{"count_endpoint", e.CountEndpoint},
		{"distinct_endpoint", e.DistinctEndpoint},
		{"cloud_key_endpoint", e.CloudKeyEndpoint},
		{"privacy_budget_endpoint", e.PrivacyBudgetEndpoint},
	}
}

// duplicate names two router endpoints (the first six) sharing a path, which
// one mux could not serve.
func (e *Endpoints) duplicate() string {
	seen := map[string]string{}
	for _, f := range e.fields()[:6] {
		if prev, ok := seen[f.path]; ok {
			return fmt.Sprintf("%s and %s share the path %q", prev, f.name, f.path)
		}
		seen[f.path] = f.name
	}
	return ""
}

// Machine is one entry of Machines, resolved.
type Machine struct {
	// Address is the key as written in the file.
	Address string
	// Local is true for the router's own engine (no agent).
	Local bool
	// URL is the agent's base URL ("" for the local engine).
	URL string
	// Weight is the placement weight.
	Weight float64
}

// MachineList returns the machines sorted by address, with agent URLs
// built from machines_use_tls and swarm_port.
func (c *Config) MachineList() []Machine {
	out := make([]Machine, 0, len(c.Machines))
	for _, addr := range slices.Sorted(mapKeys(c.Machines)) {
		m := Machine{Address: addr, Weight: c.Machines[addr]}
		if addr == LocalMachine {
			m.Local = true
		} else {
			hostport := addr
			if _, _, err := net.SplitHostPort(addr); err != nil {
				hostport = net.JoinHostPort(addr, strconv.Itoa(c.SwarmPort))
			}
			m.URL = (&url.URL{Scheme: scheme(c.MachinesUseTLS), Host: hostport}).String()
		}
		out = append(out, m)
	}
	return out
}

// RouterURL is the base URL clients dial the router at.
func (c *Config) RouterURL() string {
	host := net.JoinHostPort(c.ServiceRouterIP, strconv.Itoa(c.ServiceRouterPort))
	return (&url.URL{Scheme: scheme(c.ServiceRouterUseTLS), Host: host}).String()
}

func scheme(tls bool) string {
	if tls {
		return "https"
	}
	return "http"
}

// Path resolves p relative to the config file's directory (absolute paths and
// configs not read from a file are returned unchanged).
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

//go:embed catalog.json
var builtinCatalog []byte

// DefaultCatalog returns the built-in catalog (conf/catalog.json).
func DefaultCatalog() (*Catalog, error) {
	return ParseCatalog(builtinCatalog)
}

// ParseCatalog decodes a catalog strictly and validates it.
func ParseCatalog(b []byte) (*Catalog, error) {
	var cat Catalog
	if err := decodeStrict(b, &cat); err != nil {
		return nil, err
	}
	if err := cat.Validate(); err != nil {
		return nil, err
	}
	return &cat, nil
}

// LoadCatalog returns the catalog the config names (or the built-in one).
// Entries that name no port listen on upc_port.
func (c *Config) LoadCatalog() (*Catalog, error) {
	b := builtinCatalog
	if c.Catalog != "" {
		var err error
		if b, err = os.ReadFile(c.Path(c.Catalog)); err != nil {
			return nil, fmt.Errorf("read catalog: %w", err)
		}
	}
	var cat Catalog
	if err := decodeStrict(b, &cat); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", c.catalogName(), err)
	}
	cat.SetDefaults(c.UPCPort)
	if err := cat.Validate(); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", c.catalogName(), err)
	}
	return &cat, nil
}

func (c *Config) catalogName() string {
	if c.Catalog == "" {
		return "(built-in)"
	}
	return c.Path(c.Catalog)
}

// SetDefaults gives entries that name no port the given one (upc_port).
func (cat *Catalog) SetDefaults(port int) {
	for i := range cat.Services {
		if cat.Services[i].Port == 0 {
			cat.Services[i].Port = port
		}
	}
}

// Parse decodes a configuration (JSON or YAML) strictly, sets defaults and
// validates it. Top-level keys starting with "_" are comments.
func Parse(b []byte) (*Config, error) {
	var c Config
	if err := decodeConfig(b, &c); err != nil {
		return nil, err
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Load reads the configuration at path (JSON or YAML).
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if dir, err := filepath.Abs(filepath.Dir(path)); err == nil {
		c.dir = dir
	}
	return c, nil
}

// decodeConfig drops the top-level comment keys, then decodes strictly.
func decodeConfig(b []byte, c *Config) error {
	var raw map[string]json.RawMessage
	if err := decodeLoose(b, &raw); err != nil {
		return err
	}
	if raw == nil {
		return errors.New("parse: the document is not an object")
	}
	for k := range raw {
		if strings.HasPrefix(k, "_") {
			delete(raw, k)
		}
	}
	j, err := json.Marshal(raw)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	return decodeStrict(j, c)
}

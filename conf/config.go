package conf

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"reflect"
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
	// Docker holds the Docker backend's settings (router's local engine and
	// machine agents).
	Docker Docker `json:"docker,omitempty"`
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
	// UsersFile is the router's identity store (JSON, mode 0600: names,
	// roles and token hashes), written by `upc users`; empty keeps users in
	// memory only (lost at restart).
	UsersFile string `json:"users_file,omitempty"`
	// AdminTokenFile holds the admin's bearer token (identity "admin", role
	// admin): 32 or more characters, e.g. `openssl rand -hex 32`.
	AdminTokenFile string `json:"admin_token_file,omitempty"`
	// TokenFile is the deprecated name of AdminTokenFile (it held the one
	// token every caller shared; its holder is now the admin).
	TokenFile string `json:"token_file,omitempty"`
	// InsecureLegacy lets callers without a token use the original
	// endpoints (the original scripts send none); what they launch runs
	// with no access control. Off by default.
	InsecureLegacy bool `json:"insecure_legacy,omitempty"`
	// TLSCertPath and TLSKeyPath are the router's certificate when
	// service_router_use_tls is set. Without them, a router with a CA
	// (ca_cert_path) issues its own at start for TLSHosts.
	TLSCertPath string `json:"tls_cert_path,omitempty"`
	TLSKeyPath  string `json:"tls_key_path,omitempty"`
	// TLSHosts are the names and addresses clients reach the router at,
	// for the certificate it issues itself (default: service_router_ip).
	TLSHosts []string `json:"tls_hosts,omitempty"`
	// CACertPath and CAKeyPath are the operator's CA (`upc certs init`):
	// the router issues each instance a certificate of its own from it,
	// and presents agents a client certificate from it. Required unless
	// insecure_legacy (then instances without a CA serve plain HTTP).
	CACertPath string `json:"ca_cert_path,omitempty"`
	CAKeyPath  string `json:"ca_key_path,omitempty"`
	// InstanceCertTTL is how long an instance's certificate lasts (renewed
	// when the instance is resumed); default 168h.
	InstanceCertTTL Duration `json:"instance_cert_ttl,omitempty"`
	// MaxInstancesPerUser caps one user's live instances (default 32);
	// LaunchRate and LaunchBurst bound each identity's launches, admins
	// excepted (default 2 a second, bursts of 20). Past them: 429.
	MaxInstancesPerUser int     `json:"max_instances_per_user,omitempty"`
	LaunchRate          float64 `json:"launch_rate,omitempty"`
	LaunchBurst         int     `json:"launch_burst,omitempty"`
	// LaunchTimeout bounds how long a launch waits for the instance to answer.
	LaunchTimeout Duration `json:"launch_timeout,omitempty"`
	// AgentTimeout bounds one call to a machine agent.
	AgentTimeout Duration `json:"agent_timeout,omitempty"`
	// IdleInterval is how often the router applies the catalog's idle
	// policies (default: a quarter of the shortest, between 1s and 1m).
	IdleInterval Duration `json:"idle_interval,omitempty"`
}

// AdminToken is the admin token file's path: admin_token_file, else its
// deprecated alias token_file.
func (r Router) AdminToken() string {
	if r.AdminTokenFile != "" {
		return r.AdminTokenFile
	}
	return r.TokenFile
}

// Agent is a machine agent's own configuration.
type Agent struct {
	// Listen is the address the agent binds, e.g. "10.0.0.11:54321" or
	// "127.0.0.1:54321". No default: upc-agent refuses to start without it
	// (or --listen), so an agent never serves every interface by accident.
	Listen string `json:"listen,omitempty"`
	// Advertise is the host instances' addresses are given with (the address
	// clients dial); "gateway" (the default) is the UPC network's gateway
	// address, which the host and every container on the network reach.
	Advertise string `json:"advertise,omitempty"`
	// PublishIP is the host IP that instance ports are published on;
	// "gateway" (the default) is the UPC network's gateway address.
	PublishIP string `json:"publish_ip,omitempty"`
	// TokenFile holds the bearer token shared by the router and its agents:
	// the router sends it, and upc-agent refuses to start without it.
	TokenFile string `json:"token_file,omitempty"`
	// TLSCertPath and TLSKeyPath are the agent's certificate when
	// machines_use_tls is set.
	TLSCertPath string `json:"tls_cert_path,omitempty"`
	TLSKeyPath  string `json:"tls_key_path,omitempty"`
}

// Network modes of the Docker backend.
const (
	// NetworkBridge: each instance joins the UPC network and Docker
	// publishes its port (an endpoint, iptables rules and a docker-proxy
	// per container).
	NetworkBridge = "bridge"
	// NetworkHost: each instance shares the host's network stack and
	// listens on a port the agent allocates from docker.host_ports.
	NetworkHost = "host"
)

// Docker configures the Docker backend (upc_mode docker): the router's
// warm pool, and how agents network their instances.
type Docker struct {
	// WarmPool is the number of sealed PMs the router keeps started ahead
	// of launches, placed over the machines by weight; a new user's PM
	// launch claims one (docs/router.md#warm-pool). 0: no pool.
	WarmPool int `json:"warm_pool,omitempty"`
	// NetworkMode is "bridge" (the default) or "host".
	NetworkMode string `json:"network_mode,omitempty"`
	// HostPorts is the range "LOW-HIGH" the agent allocates instance ports
	// from in host mode.
	HostPorts string `json:"host_ports,omitempty"`
}

// PortRange parses HostPorts.
func (d Docker) PortRange() (lo, hi int, err error) {
	return ParsePortRange(d.HostPorts)
}

// With is the network mode and host port range with mode and ports (flags)
// over d's where set, checked as Validate checks d's, errors naming the
// flags.
func (d Docker) With(mode, ports string) (string, [2]int, error) {
	if mode != "" {
		d.NetworkMode = mode
	}
	if ports != "" {
		d.HostPorts = ports
	}
	if d.NetworkMode == "" {
		d.NetworkMode = NetworkBridge
	}
	if d.HostPorts == "" {
		d.HostPorts = DefaultHostPorts
	}
	if d.NetworkMode != NetworkBridge && d.NetworkMode != NetworkHost {
		return "", [2]int{}, fmt.Errorf("--network-mode (docker.network_mode): %q is not one of bridge, host", d.NetworkMode)
	}
	lo, hi, err := d.PortRange()
	if err != nil {
		return "", [2]int{}, fmt.Errorf("--host-ports (docker.host_ports): %w", err)
	}
	return d.NetworkMode, [2]int{lo, hi}, nil
}

// ParsePortRange parses "LOW-HIGH", 1024 <= LOW <= HIGH <= 65535.
func ParsePortRange(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not LOW-HIGH", s)
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("%q is not LOW-HIGH (two port numbers)", s)
	case lo < 1024 || hi > 65535:
		return 0, 0, fmt.Errorf("%q: ports must lie in 1024-65535", s)
	case lo > hi:
		return 0, 0, fmt.Errorf("%q: LOW is above HIGH", s)
	}
	return lo, hi, nil
}

// MaxWarmPool bounds docker.warm_pool: each pooled PM is a running
// container holding memory on its machine.
const MaxWarmPool = 1000

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
	// NodeAddressType is the node address instance addresses use when
	// NodeAddress is empty: "InternalIP" (the default) or "ExternalIP", for
	// clients outside the cluster's network (GKE's nodes: their InternalIP
	// is private to the VPC).
	NodeAddressType string `json:"node_address_type,omitempty"`
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
	// PMRouterPods are the labels of the router's pods (in the instances'
	// namespace), which each PM's NetworkPolicy admits beside the PM's own
	// bound services; default {"upc.component": "router"}, the pods upc
	// infra deploys.
	PMRouterPods map[string]string `json:"pm_router_pods,omitempty"`
	// PMClients are networks (CIDRs) a PM's NetworkPolicy admits too: the
	// router's address when it runs outside the cluster, and the clients
	// (users, or the nodes when kube-proxy rewrites their source) that call
	// PMs at their node ports. Default none.
	PMClients []string `json:"pm_clients,omitempty"`
	// SimulatedNodes launches instances whose pods land on kwok's simulated
	// nodes on their Ready status, with no health probe (nothing runs
	// there). For scale tests of the control plane only; default off.
	SimulatedNodes bool `json:"simulated_nodes,omitempty"`
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

var reflectDurationType = reflect.TypeFor[time.Duration]()

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
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

package conf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

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
	if (c.Router.TLSCertPath == "") != (c.Router.TLSKeyPath == "") {
		bad("router.tls_cert_path", "router.tls_cert_path and router.tls_key_path go together")
	}
	if c.ServiceRouterUseTLS && c.Router.TLSCertPath == "" && c.Router.CACertPath == "" {
		bad("router.tls_cert_path", "router.tls_cert_path and router.tls_key_path (or router.ca_cert_path, from which the router issues its own) are required when service_router_use_tls is set")
	}
	if c.Router.MaxInstancesPerUser < 0 || c.Router.MaxInstancesPerUser > 100000 {
		bad("router.max_instances_per_user", "%d must be between 0 (the default, 32) and 100000", c.Router.MaxInstancesPerUser)
	}
	if !(c.Router.LaunchRate >= 0) || c.Router.LaunchRate > 1e6 {
		bad("router.launch_rate", "%v must be a number of launches a second, 0 (the default, 2) up to 1e6", c.Router.LaunchRate)
	}
	if c.Router.LaunchBurst < 0 || c.Router.LaunchBurst > 1e6 {
		bad("router.launch_burst", "%d must be between 0 (the default, 20) and 1000000", c.Router.LaunchBurst)
	}
	if (c.Router.CACertPath == "") != (c.Router.CAKeyPath == "") {
		bad("router.ca_cert_path", "router.ca_cert_path and router.ca_key_path go together (the CA's certificate and key, from `upc certs init`)")
	}
	if c.Router.InstanceCertTTL < 0 || (c.Router.InstanceCertTTL > 0 && time.Duration(c.Router.InstanceCertTTL) < time.Minute) {
		bad("router.instance_cert_ttl", "%s must be at least 1m", time.Duration(c.Router.InstanceCertTTL))
	}
	if c.Router.IdleInterval < 0 {
		bad("router.idle_interval", "%s is negative", time.Duration(c.Router.IdleInterval))
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
		if l.addr == "" && l.field == "agent.listen" {
			continue // no default: upc-agent requires it (or --listen)
		}
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
	switch c.Docker.NetworkMode {
	case NetworkBridge, NetworkHost:
	default:
		bad("docker.network_mode", "%q is not one of bridge, host", c.Docker.NetworkMode)
	}
	if _, _, err := c.Docker.PortRange(); err != nil {
		bad("docker.host_ports", "%v", err)
	}
	if c.Router.LaunchTimeout <= 0 {
		bad("router.launch_timeout", "%s must be positive", c.Router.LaunchTimeout.D())
	}
	if c.Router.AgentTimeout <= 0 {
		bad("router.agent_timeout", "%s must be positive", c.Router.AgentTimeout.D())
	}
	if r := c.Router; r.TokenFile != "" && r.AdminTokenFile != "" && r.TokenFile != r.AdminTokenFile {
		bad("router.token_file", "is the deprecated name of router.admin_token_file: set only admin_token_file")
	}
	if r := c.Router; r.UsersFile != "" && r.UsersFile == r.AdminToken() {
		bad("router.users_file", "%q is also the admin token file", r.UsersFile)
	}
	for _, f := range []struct{ field, path string }{{"router.users_file", c.Router.UsersFile}, {"router.admin_token_file", c.Router.AdminTokenFile}} {
		if f.path != "" && (strings.HasSuffix(f.path, "/") || strings.TrimSpace(f.path) != f.path) {
			bad(f.field, "%q is not a file path", f.path)
		}
	}
	switch n := c.Docker.WarmPool; {
	case n < 0 || n > MaxWarmPool:
		bad("docker.warm_pool", "%d is not a pool size (0-%d)", n, MaxWarmPool)
	case n > 0 && c.UPCMode == ModeKubernetes:
		bad("docker.warm_pool", "is the Docker backend's pool, and upc_mode is kubernetes: set kubernetes.warm_pool instead")
	case n > 0 && c.Router.CACertPath == "":
		bad("docker.warm_pool", "needs router.ca_cert_path and router.ca_key_path: a pooled PM is provisioned for its user over TLS, by the router's client certificate alone")
	}
	for svc, n := range c.Kubernetes.WarmPool {
		if n < 0 || n > 1000 {
			bad("kubernetes.warm_pool", "%s: %d is not a pool size (0-1000)", svc, n)
		}
	}
	if c.Kubernetes.SimulatedNodes && c.UPCMode != ModeKubernetes {
		bad("kubernetes.simulated_nodes", "is the Kubernetes backend's, and upc_mode is %s", c.UPCMode)
	}
	if c.Kubernetes.GracePeriod < 0 {
		bad("kubernetes.grace_period", "%s is negative", c.Kubernetes.GracePeriod.D())
	}
	if c.Kubernetes.StorageClass == "" && c.Kubernetes.HostPathDir != "" && !filepath.IsAbs(c.Kubernetes.HostPathDir) {
		bad("kubernetes.host_path_dir", "%q must be absolute", c.Kubernetes.HostPathDir)
	}
	for _, k := range slices.Sorted(mapKeys(c.Kubernetes.PMRouterPods)) {
		if !labelKeyRE.MatchString(k) || len(k) > 253+1+63 {
			bad("kubernetes.pm_router_pods", "%q is not a label key", k)
		}
		if v := c.Kubernetes.PMRouterPods[k]; v != "" && !labelValueRE.MatchString(v) {
			bad("kubernetes.pm_router_pods", "%s: %q is not a label value", k, v)
		}
	}
	for i, cidr := range c.Kubernetes.PMClients {
		if p, err := netip.ParsePrefix(cidr); err != nil || p.Masked() != p {
			bad(fmt.Sprintf("kubernetes.pm_clients[%d]", i), "%q is not a network in CIDR notation (e.g. 10.0.0.0/8, 192.0.2.7/32)", cidr)
		}
	}
	return errors.Join(errs...)
}

var (
	labelValueRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)
	labelKeyRE   = regexp.MustCompile(`^([a-z0-9]([a-z0-9.-]*[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)
)

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

package conf

import (
	"strconv"
	"time"
)

// Defaults of the original machines.json.sample, and ours.
const (
	DefaultServiceRouterIP   = "127.0.0.1"
	DefaultServiceRouterPort = 4430
	DefaultUPCPort           = 8123
	DefaultSwarmPort         = 54321
	DefaultNetwork           = "upc"
	// DefaultHostPorts lies below Linux's ephemeral ports (32768-60999), so
	// outgoing connections never hold one an instance needs.
	DefaultHostPorts     = "20000-23999"
	DefaultLaunchTimeout = 60 * time.Second
	DefaultAgentTimeout  = 30 * time.Second
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
	// agent.listen has no default: an agent serves only where it is told
	// (upc-agent refuses to start without --listen or agent.listen).
	if c.Agent.Advertise == "" {
		c.Agent.Advertise = Gateway
	}
	if c.Agent.PublishIP == "" {
		c.Agent.PublishIP = Gateway
	}
	if c.Docker.NetworkMode == "" {
		c.Docker.NetworkMode = NetworkBridge
	}
	if c.Docker.HostPorts == "" {
		c.Docker.HostPorts = DefaultHostPorts
	}
}

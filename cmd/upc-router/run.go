package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
)

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("upc-router", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath    = fs.String("config", "", "UPC configuration file (JSON or YAML; original machines.json names); default: one local machine")
		listen        = fs.String("listen", "", "address to serve on (default router.listen, \":<service_router_port>\")")
		catalogPath   = fs.String("catalog", "", "service catalog file (default the config's catalog, else the built-in one)")
		imagesPath    = fs.String("images", "", "image manifest (build/images.json) pinning the catalog's images by ID (default the config's images)")
		advertise     = fs.String("advertise", "", `local machine only: host put in instance addresses ("gateway" or a host; default agent.advertise)`)
		publishIP     = fs.String("publish-ip", "", `local machine only: host IP instance ports are published on ("gateway" or an IP; default agent.publish_ip)`)
		network       = fs.String("network", "", "local machine only: Docker network instances join (default config network)")
		name          = fs.String("name", "upc", "local machine only: agent name (label upc.agent)")
		netMode       = fs.String("network-mode", "", `local machine only: "bridge" or "host" (default docker.network_mode; see docs/configuration.md)`)
		hostPorts     = fs.String("host-ports", "", "local machine only: LOW-HIGH, the ports host network mode allocates from (default docker.host_ports)")
		launchTimeout = fs.Duration("launch-timeout", 0, "how long a launch waits for the instance to answer (default router.launch_timeout)")
		rebuildWait   = fs.Duration("rebuild-wait", 30*time.Second, "how long to retry rebuilding the view from the machines at start (agents may still be starting)")
		logLevel      = fs.String("log-level", "info", "debug, info, warn or error")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})).With("component", "router")

	cfg := conf.Default()
	if *configPath != "" {
		var err error
		if cfg, err = conf.Load(*configPath); err != nil {
			return err
		}
	}
	if *launchTimeout < 0 || *rebuildWait < 0 {
		return errors.New("--launch-timeout and --rebuild-wait must not be negative")
	}
	catalog, err := loadCatalog(cfg, *catalogPath, *imagesPath, logger)
	if err != nil {
		return err
	}
	ca, err := loadCA(cfg)
	if err != nil {
		return err
	}
	tr, err := transport(cfg, ca)
	if err != nil {
		return err
	}
	var backend router.Backend
	if cfg.UPCMode == conf.ModeKubernetes {
		kb, err := newKubernetesBackend(ctx, cfg, catalog, logger)
		if err != nil {
			return err
		}
		defer kb.Close()
		backend = kb
	} else {
		mode, ports, err := cfg.Docker.With(*netMode, *hostPorts)
		if err != nil {
			return err
		}
		backend, err = newBackend(cfg, tr, agent.Options{
			NetworkMode: mode, HostPorts: ports,
			Network:   firstSet(*network, cfg.Network),
			BindIP:    firstSet(*publishIP, cfg.Agent.PublishIP),
			Advertise: firstSet(*advertise, cfg.Agent.Advertise),
			Name:      *name,
		}, *advertise != "" && *publishIP == "", logger)
		if err != nil {
			return err
		}
	}
	users, err := openUsers(cfg, logger)
	if err != nil {
		return err
	}
	if err := refusePlain(cfg, ca, logger); err != nil {
		return err
	}
	core, err := router.New(router.Options{
		Backend: backend, Catalog: catalog, Logger: logger,
		HealthTimeout: firstDuration(*launchTimeout, cfg.Router.LaunchTimeout.D()),
		Users:         users, InsecureLegacy: cfg.Router.InsecureLegacy,
		CA: ca, InstanceCertTTL: cfg.Router.InstanceCertTTL.D(), PlainHTTP: ca == nil,
		MaxInstancesPerUser: cfg.Router.MaxInstancesPerUser, LaunchRate: cfg.Router.LaunchRate, LaunchBurst: cfg.Router.LaunchBurst,
		IdleInterval: cfg.Router.IdleInterval.D(),
		WarmPool:     warmPool(cfg),
	})
	if err != nil {
		return err
	}
	if err := rebuild(ctx, core, *rebuildWait, logger); err != nil {
		return err
	}
	go core.RenewCertificates(ctx)
	// The catalog's idle policies, on either backend (nothing to do when
	// no service has one).
	go core.SweepIdle(ctx, 0)
	// The Docker warm pool (docker.warm_pool): filled in the background,
	// and its unclaimed PMs removed before the router exits.
	pooled := make(chan struct{})
	pctx, stopPool := context.WithCancel(ctx)
	go func() {
		defer close(pooled)
		core.RunPool(pctx)
	}()
	defer func() { stopPool(); <-pooled }()

	h := router.Handler(core, logger)
	addr := firstSet(*listen, cfg.Router.Listen)
	if !cfg.ServiceRouterUseTLS {
		logger.Warn("INSECURE: service_router_use_tls is off (allowed by insecure_legacy): tokens and keys reach this router in clear")
		return httpx.ListenAndServe(ctx, logger, addr, h)
	}
	kp, err := routerKeypair(cfg, ca, logger)
	if err != nil {
		return fmt.Errorf("router certificate: %w", err)
	}
	return httpx.ListenAndServeTLS(ctx, logger, addr, h, certs.ServerConfig(kp, nil))
}

// warmPool is the router's own warm pool size: docker.warm_pool in docker
// mode (the Kubernetes backend keeps kubernetes.warm_pool itself).
func warmPool(cfg *conf.Config) int {
	if cfg.UPCMode == conf.ModeKubernetes {
		return 0
	}
	return cfg.Docker.WarmPool
}

// loadCA reads the CA the router issues instance certificates from, if
// router.ca_cert_path names one.
func loadCA(cfg *conf.Config) (*certs.CA, error) {
	if cfg.Router.CACertPath == "" {
		return nil, nil
	}
	ca, err := certs.LoadCA(cfg.Path(cfg.Router.CACertPath), cfg.Path(cfg.Router.CAKeyPath))
	if err != nil {
		return nil, fmt.Errorf("router.ca_cert_path: %w", err)
	}
	if cfg.CertificateBundlePath == "" {
		return nil, errors.New("certificate_bundle_path: required with router.ca_cert_path (the CAs clients, agents and instances trust; usually the same ca.crt)")
	}
	return ca, nil
}

// refusePlain is deny by default: without TLS on the router's own port, to
// its agents and on its instances (a CA), the router starts only under
// insecure_legacy, loudly.
func refusePlain(cfg *conf.Config, ca *certs.CA, logger *slog.Logger) error {
	var plain []string
	if !cfg.ServiceRouterUseTLS {
		plain = append(plain, "service_router_use_tls is off (clients would reach the router in clear)")
	}
	remote := slices.ContainsFunc(cfg.MachineList(), func(m conf.Machine) bool { return !m.Local })
	if remote && !cfg.MachinesUseTLS {
		plain = append(plain, "machines_use_tls is off (the router would call its agents in clear)")
	}
	if ca == nil {
		plain = append(plain, "router.ca_cert_path and router.ca_key_path are unset (instances would serve plain HTTP; make a CA with `upc certs init`)")
	}
	if len(plain) == 0 {
		return nil
	}
	if !cfg.Router.InsecureLegacy {
		return fmt.Errorf("router: refusing plain HTTP: %s; plain HTTP is allowed only with insecure_legacy: true", strings.Join(plain, "; "))
	}
	logger.Warn("INSECURE: plain HTTP allowed by insecure_legacy: " + strings.Join(plain, "; "))
	return nil
}

// routerKeypair is the router's serving certificate: its files, else one it
// issues itself from ca for router.tls_hosts (default service_router_ip).
func routerKeypair(cfg *conf.Config, ca *certs.CA, logger *slog.Logger) (*certs.Keypair, error) {
	if cfg.Router.TLSCertPath != "" {
		return loadKeypair(cfg.Path(cfg.Router.TLSCertPath), cfg.Path(cfg.Router.TLSKeyPath))
	}
	if ca == nil {
		return nil, errors.New("router.tls_cert_path is unset and there is no CA to issue one")
	}
	hosts := cfg.Router.TLSHosts
	if len(hosts) == 0 {
		hosts = []string{cfg.ServiceRouterIP}
	}
	c, k, err := ca.Issue(certs.Request{Name: hosts[0], Hosts: hosts[1:], Server: true, TTL: certs.DefaultTTL})
	if err != nil {
		return nil, err
	}
	logger.Info("issued the router's own certificate from its CA", "hosts", strings.Join(hosts, ","))
	return certs.NewKeypair(c, k)
}

func loadKeypair(certPath, keyPath string) (*certs.Keypair, error) {
	c, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	k, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	return certs.NewKeypair(c, k)
}

// openUsers builds the router's identity store from router.users_file and
// router.admin_token_file (or its deprecated alias router.token_file). A
// router no one could call is refused, unless insecure_legacy lets the
// original scripts in.
func openUsers(cfg *conf.Config, logger *slog.Logger) (*router.Users, error) {
	var adminToken string
	if f := cfg.Router.AdminToken(); f != "" {
		field := "router.admin_token_file"
		if cfg.Router.AdminTokenFile == "" {
			field = "router.token_file"
			logger.Warn("router.token_file is deprecated: it now names the admin's token; rename it router.admin_token_file")
		}
		b, err := os.ReadFile(cfg.Path(f))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if adminToken = strings.TrimSpace(string(b)); adminToken == "" {
			return nil, fmt.Errorf("%s %s is empty", field, f)
		}
	}
	users, err := router.OpenUsers(cfg.Path(cfg.Router.UsersFile), adminToken)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	if cfg.Router.UsersFile == "" {
		logger.Warn("no router.users_file: users added with `upc users add` live in memory and are lost at restart")
	}
	if adminToken == "" && cfg.Router.UsersFile == "" && !cfg.Router.InsecureLegacy {
		return nil, errors.New("router: no one could call this router: set router.admin_token_file (and router.users_file), or insecure_legacy for the original scripts alone")
	}
	if cfg.Router.InsecureLegacy {
		logger.Warn("INSECURE: insecure_legacy is on: anyone who reaches this router may use the original endpoints without a token, " +
			"and what they launch runs with no access control (UPC_INSECURE_LEGACY=1)")
	}
	return users, nil
}

// loadCatalog reads the catalog (--catalog, else the config's), with the
// config's defaults either way, and pins its images with the manifest.
func loadCatalog(cfg *conf.Config, catalogPath, imagesPath string, logger *slog.Logger) (*conf.Catalog, error) {
	var (
		cat *conf.Catalog
		err error
	)
	if catalogPath != "" {
		cat, err = cfg.LoadCatalogFile(catalogPath)
	} else {
		cat, err = cfg.LoadCatalog()
	}
	if err != nil {
		return nil, err
	}
	manifest := imagesPath
	if manifest == "" && cfg.Images != "" {
		manifest = cfg.Path(cfg.Images)
	}
	if manifest != "" {
		m, err := images.LoadManifest(manifest)
		if err != nil {
			return nil, err
		}
		m.Pin(cat)
	}
	if unpinned := cat.Unpinned(); len(unpinned) > 0 {
		logger.Warn("IMAGES NOT VALIDATED: these services have no pinned digest and run whatever their image reference names when launched; "+
			"pin them with the image manifest make images writes (images: build/images.json, or --images)", "services", unpinned, "manifest", manifest)
	}
	return cat, nil
}

// newBackend drives the local engine in process for the machine "local",
// else one agent per configured machine.
func newBackend(cfg *conf.Config, tr http.RoundTripper, local agent.Options, bindAtAdvertise bool, logger *slog.Logger) (*docker.Backend, error) {
	var machines []docker.Machine
	hc := &http.Client{Timeout: cfg.Router.AgentTimeout.D(), Transport: tr}
	var agentToken string
	if cfg.Agent.TokenFile != "" {
		b, err := os.ReadFile(cfg.Path(cfg.Agent.TokenFile))
		if err != nil {
			return nil, fmt.Errorf("agent.token_file: %w", err)
		}
		if agentToken = strings.TrimSpace(string(b)); agentToken == "" {
			return nil, fmt.Errorf("agent.token_file %s is empty", cfg.Agent.TokenFile)
		}
	}
	for _, m := range cfg.MachineList() {
		if !m.Local {
			c, err := agent.NewClient(m.URL, hc)
			if err != nil {
				return nil, fmt.Errorf("machines[%q]: %w", m.Address, err)
			}
			c.WithToken(agentToken)
			machines = append(machines, docker.Machine{Name: m.Address, Weight: m.Weight, Driver: c})
			continue
		}
		if bindAtAdvertise && net.ParseIP(local.Advertise) != nil {
			local.BindIP = local.Advertise
		}
		if local.Advertise == conf.Gateway {
			local.Advertise = ""
		}
		cli, err := agent.NewClientFromEnv()
		if err != nil {
			return nil, err
		}
		e, err := agent.NewEngine(cli, local, logger.With("machine", "local"))
		if err != nil {
			return nil, fmt.Errorf("local machine: %w", err)
		}
		machines = append(machines, docker.Machine{Name: m.Address, Weight: m.Weight, Driver: e})
	}
	return docker.New(machines, docker.Options{}, logger.With("backend", "docker"))
}

// transport calls agents: verifying them against the certificate bundle
// and presenting the router's client certificate from ca (mutual TLS).
func transport(cfg *conf.Config, ca *certs.CA) (http.RoundTripper, error) {
	if cfg.CertificateBundlePath == "" {
		return http.DefaultTransport, nil
	}
	pool, err := certs.LoadPool(cfg.Path(cfg.CertificateBundlePath))
	if err != nil {
		return nil, fmt.Errorf("certificate_bundle_path: %w", err)
	}
	var client *tls.Certificate
	if ca != nil {
		c, err := ca.RouterClient(time.Until(ca.Cert.NotAfter))
		if err != nil {
			return nil, err
		}
		client = &c
	}
	return certs.Transport(pool, client), nil
}

// rebuild adopts what the machines already run, retrying while agents start.
func rebuild(ctx context.Context, core *router.Router, wait time.Duration, logger *slog.Logger) error {
	deadline := time.Now().Add(wait)
	delay := 100 * time.Millisecond
	for {
		err := core.Rebuild(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			if errors.Is(err, router.ErrMachineDown) {
				// Start with what answered: a dead machine must not keep
				// everyone else's clouds down. Its instances are unavailable
				// (and its users get no PM elsewhere) until it answers.
				logger.Warn("starting without machines that do not answer: their instances are unavailable until they do", "err", err)
				go adoptLater(ctx, core, logger)
				return nil
			}
			return fmt.Errorf("%w (gave up after %s)", err, wait)
		}
		logger.Warn("rebuild failed; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// adoptLater takes in the instances of machines that did not answer at
// start, once they do.
func adoptLater(ctx context.Context, core *router.Router, logger *slog.Logger) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := core.Adopt(ctx); err == nil {
			logger.Info("every machine answers again")
			return
		} else if !errors.Is(err, router.ErrMachineDown) {
			logger.Warn("adopt failed", "err", err)
		}
	}
}

func firstSet(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func firstDuration(ds ...time.Duration) time.Duration {
	for _, d := range ds {
		if d > 0 {
			return d
		}
	}
	return 0
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/e-mission/upc/conf"
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
	tr, err := transport(cfg)
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
		backend, err = newBackend(cfg, tr, agent.Options{
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
	core, err := router.New(router.Options{
		Backend: backend, Catalog: catalog, Logger: logger,
		HealthTimeout: firstDuration(*launchTimeout, cfg.Router.LaunchTimeout.D()),
		HTTPClient:    &http.Client{Timeout: 2 * time.Second, Transport: tr},
		Users:         users, InsecureLegacy: cfg.Router.InsecureLegacy,
	})
	if err != nil {
		return err
	}
	if err := rebuild(ctx, core, *rebuildWait, logger); err != nil {
		return err
	}

	h := router.Handler(core, logger)
	addr := firstSet(*listen, cfg.Router.Listen)
	if !cfg.ServiceRouterUseTLS {
		return httpx.ListenAndServe(ctx, logger, addr, h)
	}
	cert, err := tls.LoadX509KeyPair(cfg.Path(cfg.Router.TLSCertPath), cfg.Path(cfg.Router.TLSKeyPath))
	if err != nil {
		return fmt.Errorf("router certificate: %w", err)
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	logger.Info("listening", "addr", ln.Addr().String(), "tls", true)
	return httpx.Serve(ctx, &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, ln, 500*time.Millisecond)
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

// transport trusts the configured certificate bundle for agents and instances.
func transport(cfg *conf.Config) (http.RoundTripper, error) {
	if cfg.CertificateBundlePath == "" {
		return http.DefaultTransport, nil
	}
	b, err := os.ReadFile(cfg.Path(cfg.CertificateBundlePath))
	if err != nil {
		return nil, fmt.Errorf("certificate_bundle_path: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("certificate_bundle_path %s: no PEM certificate in it", cfg.CertificateBundlePath)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return t, nil
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

package main

import (
	"context"
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
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/router/docker/agent"
)

// labelFlags collects repeated --label k=v.
type labelFlags map[string]string

func (l labelFlags) String() string { return fmt.Sprint(map[string]string(l)) }
func (l labelFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not key=value", s)
	}
	l[k] = v
	return nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("upc-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("config", "", "UPC configuration file (JSON or YAML; original machines.json names); default: built-in defaults")
		listen     = fs.String("listen", "", "address to serve on, e.g. 10.0.0.11:54321, or 127.0.0.1:54321 for a router on this host (default agent.listen; required: there is no default, the agent serves only where it is told)")
		tokenFile  = fs.String("token-file", "", "file holding the bearer token shared with the router (default agent.token_file; required: the agent refuses to start without it)")
		catalogF   = fs.String("catalog", "", "service catalog whose images the agent may run (default the config's catalog, else the built-in one)")
		imagesF    = fs.String("images", "", "image manifest (build/images.json) pinning the catalog's images by ID (default the config's images)")
		advertise  = fs.String("advertise", "", `host put in instance addresses: "gateway" (the UPC network's gateway) or a host (default agent.advertise)`)
		publishIP  = fs.String("publish-ip", "", `host IP instance ports are published on: "gateway" or an IP (default agent.publish_ip; with --advertise IP alone, that IP)`)
		network    = fs.String("network", "", "Docker network instances join (default config network, \"upc\")")
		name       = fs.String("name", "upc", "agent name (label upc.agent): agents sharing one engine need distinct names")
		netMode    = fs.String("network-mode", "", `"bridge" (instances on the network, ports published by Docker) or "host" (instances on the host's network, at ports the agent allocates from docker.host_ports) (default docker.network_mode)`)
		hostPorts  = fs.String("host-ports", "", "LOW-HIGH: the ports host network mode allocates from (default docker.host_ports)")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		labels     = labelFlags{}
	)
	fs.Var(labels, "label", "k=v label put on every container, volume and network the agent creates (repeatable)")
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
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})).With("component", "agent", "agent", *name)

	cfg := conf.Default()
	var err error
	if *configPath != "" {
		if cfg, err = conf.Load(*configPath); err != nil {
			return err
		}
	}
	mode, ports, err := cfg.Docker.With(*netMode, *hostPorts)
	if err != nil {
		return err
	}
	opts := agent.Options{
		NetworkMode: mode, HostPorts: ports,
		Network:   firstSet(*network, cfg.Network),
		BindIP:    firstSet(*publishIP, cfg.Agent.PublishIP),
		Advertise: firstSet(*advertise, cfg.Agent.Advertise),
		Name:      *name,
		Labels:    labels,
	}
	// --advertise with an IP and no --publish-ip: publish where we advertise.
	if *advertise != "" && *publishIP == "" && net.ParseIP(*advertise) != nil {
		opts.BindIP = *advertise
	}
	if opts.Advertise == conf.Gateway {
		opts.Advertise = ""
	}
	addr := firstSet(*listen, cfg.Agent.Listen)
	if addr == "" {
		return errors.New("no listen address: give --listen HOST:PORT or agent.listen (there is no default; 127.0.0.1:PORT serves a router on this host only)")
	}
	if host, _, err := net.SplitHostPort(addr); err == nil && (host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified()) {
		logger.Warn("serving on every interface, as told: only the token keeps others out (give --listen HOST:PORT to narrow it)", "listen", addr)
	}
	var token string
	switch tf := *tokenFile; {
	case tf != "":
		if token, err = readToken(tf); err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
	case cfg.Agent.TokenFile != "":
		if token, err = readToken(cfg.Path(cfg.Agent.TokenFile)); err != nil {
			return fmt.Errorf("agent.token_file: %w", err)
		}
	default:
		return errors.New("no token: give --token-file FILE or agent.token_file, a file holding the token the router sends (agent.token_file in its config)")
	}
	imgs, err := catalogImages(cfg, *catalogF, *imagesF, logger)
	if err != nil {
		return err
	}

	cli, err := agent.NewClientFromEnv()
	if err != nil {
		return err
	}
	defer cli.Close()
	engine, err := agent.NewEngine(cli, opts, logger)
	if err != nil {
		return fmt.Errorf("agent options: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := engine.Ping(pctx); err != nil {
		return fmt.Errorf("docker engine: %w (is /var/run/docker.sock mounted?)", err)
	}
	if _, err := engine.EnsureNetwork(pctx); err != nil {
		return err
	}
	h := agent.Handler(engine, logger, agent.HandlerOptions{Token: token, Images: imgs})
	if !cfg.MachinesUseTLS {
		// Deny by default: plain HTTP carries the token, and every user's
		// launch, in clear.
		if !cfg.Router.InsecureLegacy {
			return errors.New("refusing plain HTTP: set machines_use_tls (with agent.tls_cert_path, agent.tls_key_path and certificate_bundle_path), or insecure_legacy: true")
		}
		logger.Warn("INSECURE: machines_use_tls is off (allowed by insecure_legacy): the router's token and users' launches reach this agent in clear")
		return httpx.ListenAndServe(ctx, logger, addr, h)
	}
	c, err := os.ReadFile(cfg.Path(cfg.Agent.TLSCertPath))
	if err != nil {
		return fmt.Errorf("agent certificate: %w", err)
	}
	k, err := os.ReadFile(cfg.Path(cfg.Agent.TLSKeyPath))
	if err != nil {
		return fmt.Errorf("agent key: %w", err)
	}
	kp, err := certs.NewKeypair(c, k)
	if err != nil {
		return fmt.Errorf("agent certificate: %w", err)
	}
	routers, err := certs.LoadPool(cfg.Path(cfg.CertificateBundlePath))
	if err != nil {
		return fmt.Errorf("certificate_bundle_path: %w", err)
	}
	// Mutual TLS: only a client certificate naming the router (or a
	// monitor, which reads /metrics alone), from the bundle's CAs, gets as
	// far as the token check.
	err = httpx.ListenAndServeTLS(ctx, logger, addr, h, certs.MutualServerConfig(kp, routers, certs.RouterName, certs.MonitorName))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// readToken reads the shared token from path; a missing or empty file is
// an error naming it.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return token, nil
}

// catalogImages are the images the agent may run: the catalog's (--catalog,
// else the config's), pinned by the manifest (--images, else the config's)
// as the router pins them.
func catalogImages(cfg *conf.Config, catalogPath, imagesPath string, logger *slog.Logger) ([]agent.Image, error) {
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
	out := make([]agent.Image, 0, len(cat.Services))
	for _, s := range cat.Services {
		out = append(out, agent.Image{Ref: s.Image, Digest: s.Digest})
		logger.Debug("catalog image", "service", s.Name, "image", s.Image, "digest", s.Digest)
	}
	return out, nil
}

func firstSet(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

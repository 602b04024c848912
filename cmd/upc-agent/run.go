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
	"strings"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/router"
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
		listen     = fs.String("listen", "", "address to serve on (default agent.listen, \":<swarm_port>\")")
		advertise  = fs.String("advertise", "", `host put in instance addresses: "gateway" (the UPC network's gateway) or a host (default agent.advertise)`)
		publishIP  = fs.String("publish-ip", "", `host IP instance ports are published on: "gateway" or an IP (default agent.publish_ip; with --advertise IP alone, that IP)`)
		network    = fs.String("network", "", "Docker network instances join (default config network, \"upc\")")
		name       = fs.String("name", "upc", "agent name (label upc.agent): agents sharing one engine need distinct names")
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
	if *configPath != "" {
		var err error
		if cfg, err = conf.Load(*configPath); err != nil {
			return err
		}
	}
	opts := agent.Options{
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
	var h http.Handler = agent.Handler(engine, logger)
	if cfg.Agent.TokenFile != "" {
		token, err := readToken(cfg.Path(cfg.Agent.TokenFile))
		if err != nil {
			return fmt.Errorf("agent.token_file: %w", err)
		}
		h = router.RequireToken(token, logger, h)
	}
	if !cfg.MachinesUseTLS {
		return httpx.ListenAndServe(ctx, logger, addr, h)
	}
	cert, err := tls.LoadX509KeyPair(cfg.Path(cfg.Agent.TLSCertPath), cfg.Path(cfg.Agent.TLSKeyPath))
	if err != nil {
		return fmt.Errorf("agent certificate: %w", err)
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	logger.Info("listening", "addr", ln.Addr().String(), "tls", true)
	err = httpx.Serve(ctx, &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, ln, 500*time.Millisecond)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

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

func firstSet(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

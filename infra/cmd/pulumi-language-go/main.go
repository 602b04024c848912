// Command pulumi-language-go is a small stand-in for Pulumi's Go language
// host, for machines whose Go module proxy does not serve the real one
// (github.com/pulumi/pulumi/sdk/go/pulumi-language-go/v3). `make tools`
// builds it into the tools cache only when no pulumi-language-go is
// installed; with a real Pulumi install it is never used.
//
// It does what the real host does for `pulumi up|preview|destroy` of a
// program without runtime options: `go build` the program in its folder
// (Pulumi.yaml's main), then run the binary in the folder the engine gives
// (RunRequest.Pwd) with the engine's PULUMI_* environment (project, stack,
// root directory, configuration and its secret keys, dry run, parallelism,
// the resource monitor's and the engine's addresses). Plugins are found as
// the program registers resources (it reports none ahead), and it builds no
// other languages' features (plugins, code generation, templates).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Version is the version the host reports to the engine.
const Version = "3.274.1-upc"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pulumi-language-go:", err)
		os.Exit(1)
	}
}

// run serves the LanguageRuntime service on a free port and prints the port,
// which is how the engine learns where the host listens. The engine's
// address is the first argument, or comes later by Handshake.
func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pulumi-language-go", flag.ContinueOnError)
	// Flags the engine may pass; the real host ignores them too.
	fs.String("tracing", "", "tracing endpoint (ignored)")
	fs.String("root", "", "project root (obsolete; ignored)")
	fs.String("binary", "", "(obsolete; ignored)")
	fs.String("buildTarget", "", "(obsolete; ignored)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h := &host{}
	if fs.NArg() > 0 {
		h.engine = fs.Arg(0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cancel := make(chan bool)
	go func() { <-ctx.Done(); close(cancel) }()
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintf(stdout, "%d\n", handle.Port)
	return <-handle.Done
}

// host implements the LanguageRuntime service for Go programs.
type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	mu     sync.Mutex
	engine string // the engine's gRPC address
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	h.engine = req.GetEngineAddress()
	h.mu.Unlock()
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) engineAddress() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.engine
}

// GetRequiredPlugins and GetRequiredPackages report none: the engine loads
// each provider plugin when the program first registers one of its
// resources (`make tools` installs them).
func (h *host) GetRequiredPlugins(context.Context, *pulumirpc.GetRequiredPluginsRequest) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) GetRequiredPackages(context.Context, *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

func (h *host) About(context.Context, *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(gobin, "env", "GOVERSION").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOVERSION: %w", err)
	}
	return &pulumirpc.AboutResponse{Executable: gobin, Version: string(out)}, nil
}

func (h *host) GetProgramDependencies(context.Context, *pulumirpc.GetProgramDependenciesRequest) (*pulumirpc.GetProgramDependenciesResponse, error) {
	return &pulumirpc.GetProgramDependenciesResponse{}, nil
}

// InstallDependencies has nothing to do: `go build` fetches what go.mod
// names (from the module cache, or the proxy).
func (h *host) InstallDependencies(*pulumirpc.InstallDependenciesRequest, grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse]) error {
	return nil
}

// Run builds the program and runs it once.
func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	engine := h.engineAddress()
	if engine == "" {
		return nil, errors.New("no engine address: the engine must call Handshake before Run")
	}
	dir := req.GetInfo().GetProgramDirectory()
	if dir == "" {
		dir = req.GetPwd()
	}
	bin, err := Build(ctx, dir, os.Stderr)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	defer os.Remove(bin)
	cmd, err := Command(ctx, bin, req, engine)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return &pulumirpc.RunResponse{}, nil
	case errors.As(err, &exit) && exit.ExitCode() == 32:
		// The SDK's "error already logged" status (constant.ExitStatusLoggedError).
		return &pulumirpc.RunResponse{Bail: true}, nil
	case errors.As(err, &exit):
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited with non-zero exit code: %d", exit.ExitCode())}, nil
	default:
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
}

// Build compiles the Go program in dir (`go build`, as the real host does)
// into a temporary file and returns its path.
func Build(ctx context.Context, dir string, log io.Writer) (string, error) {
	f, err := os.CreateTemp("", "pulumi-go.*")
	if err != nil {
		return "", fmt.Errorf("program binary: %w", err)
	}
	f.Close()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", f.Name(), ".")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("go build in %s: %w", dir, err)
	}
	return f.Name(), nil
}

// Command is the program's process as the real host starts it: in
// req.Pwd, with the engine's settings in the PULUMI_* variables the Go SDK
// reads (pulumi.Env*), added to this process's environment.
func Command(ctx context.Context, bin string, req *pulumirpc.RunRequest, engine string) (*exec.Cmd, error) {
	cfg, err := json.Marshal(req.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	keys := req.GetConfigSecretKeys()
	if keys == nil {
		keys = []string{}
	}
	secretKeys, err := json.Marshal(keys)
	if err != nil {
		return nil, fmt.Errorf("secret keys: %w", err)
	}
	env := os.Environ()
	add := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	add(pulumi.EnvOrganization, req.GetOrganization())
	add(pulumi.EnvProject, req.GetProject())
	add(pulumi.EnvPulumiRootDirectory, req.GetInfo().GetRootDirectory())
	add(pulumi.EnvStack, req.GetStack())
	if req.GetConfig() != nil {
		add(pulumi.EnvConfig, string(cfg))
	}
	add(pulumi.EnvConfigSecretKeys, string(secretKeys))
	add(pulumi.EnvDryRun, strconv.FormatBool(req.GetDryRun()))
	add(pulumi.EnvParallel, strconv.Itoa(int(req.GetParallel())))
	add(pulumi.EnvMonitor, req.GetMonitorAddress())
	add(pulumi.EnvEngine, engine)
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = req.GetPwd()
	if cmd.Dir == "" {
		cmd.Dir = req.GetInfo().GetProgramDirectory()
	}
	cmd.Env = env
	return cmd, nil
}

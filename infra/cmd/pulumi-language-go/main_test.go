package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/e-mission/upc/infra/auto"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/images"
)

// fakeEngine is the engine's side of a run: the Engine service (logs) and
// the ResourceMonitor, which records every registration and answers with
// the inputs as outputs, as a preview does.
type fakeEngine struct {
	pulumirpc.UnimplementedEngineServer
	pulumirpc.UnimplementedResourceMonitorServer

	mu      sync.Mutex
	regs    []*pulumirpc.RegisterResourceRequest
	outputs map[string]any // the stack's, from RegisterResourceOutputs
	logs    []string
}

func (f *fakeEngine) Log(_ context.Context, req *pulumirpc.LogRequest) (*emptypb.Empty, error) {
	f.mu.Lock()
	f.logs = append(f.logs, req.GetMessage())
	f.mu.Unlock()
	return &emptypb.Empty{}, nil
}

func (f *fakeEngine) GetRootResource(context.Context, *pulumirpc.GetRootResourceRequest) (*pulumirpc.GetRootResourceResponse, error) {
	return &pulumirpc.GetRootResourceResponse{}, nil
}

func (f *fakeEngine) SetRootResource(context.Context, *pulumirpc.SetRootResourceRequest) (*pulumirpc.SetRootResourceResponse, error) {
	return &pulumirpc.SetRootResourceResponse{}, nil
}

func (f *fakeEngine) SupportsFeature(context.Context, *pulumirpc.SupportsFeatureRequest) (*pulumirpc.SupportsFeatureResponse, error) {
	return &pulumirpc.SupportsFeatureResponse{HasSupport: false}, nil
}

func (f *fakeEngine) RegisterResource(_ context.Context, req *pulumirpc.RegisterResourceRequest) (*pulumirpc.RegisterResourceResponse, error) {
	f.mu.Lock()
	f.regs = append(f.regs, req)
	f.mu.Unlock()
	urn := "urn:pulumi:existing::upc::" + req.GetType() + "::" + req.GetName()
	resp := &pulumirpc.RegisterResourceResponse{Urn: urn, Object: req.GetObject()}
	if req.GetCustom() {
		resp.Id = req.GetName() + "-id"
	}
	return resp, nil
}

func (f *fakeEngine) RegisterResourceOutputs(_ context.Context, req *pulumirpc.RegisterResourceOutputsRequest) (*emptypb.Empty, error) {
	if strings.Contains(req.GetUrn(), "::pulumi:pulumi:Stack::") {
		f.mu.Lock()
		f.outputs = req.GetOutputs().AsMap()
		f.mu.Unlock()
	}
	return &emptypb.Empty{}, nil
}

func (f *fakeEngine) serve(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pulumirpc.RegisterEngineServer(srv, f)
	pulumirpc.RegisterResourceMonitorServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

func (f *fakeEngine) registered(typ string) []*pulumirpc.RegisterResourceRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*pulumirpc.RegisterResourceRequest
	for _, r := range f.regs {
		if r.GetType() == typ {
			out = append(out, r)
		}
	}
	return out
}

// TestRunProgramAsLanguageHost builds infra/ (the program Pulumi.yaml's
// main names) and runs it as the language host does for `pulumi preview
// --stack existing`: in the program's folder, one below a project folder
// that is elsewhere, with the engine's PULUMI_* environment and a resource
// monitor to talk to. The stack's relative paths (upc:images,
// upc:kubeconfig) must resolve against the project folder, not the
// working directory.
func TestRunProgramAsLanguageHost(t *testing.T) {
	program, err := filepath.Abs("../..") // infra/
	if err != nil {
		t.Fatal(err)
	}
	project := t.TempDir()
	write := func(rel, s string) {
		p := filepath.Join(project, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Pulumi.yaml", "name: upc\nruntime: go\nmain: infra/\n")
	m := &images.Manifest{Version: "v9.9.9", Images: map[string]images.Image{}}
	for _, n := range []string{"pm", "router"} {
		m.Images[n] = images.Image{Ref: images.Ref(n, "v9.9.9"), ID: "sha256:" + strings.Repeat("a", 64)}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	write("build/images.json", string(b))
	write("kube/config", "apiVersion: v1\nkind: Config # the language-host test's\n")
	caCert, caKey, err := auto.NewCA("existing")
	if err != nil {
		t.Fatal(err)
	}

	f := &fakeEngine{}
	addr := f.serve(t)
	h := &host{}
	if _, err := h.Handshake(context.Background(), &pulumirpc.LanguageHandshakeRequest{EngineAddress: addr}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	resp, err := h.Run(ctx, &pulumirpc.RunRequest{
		Project: "upc", Stack: "existing", Pwd: program, DryRun: true, Parallel: 4,
		MonitorAddress: addr,
		Config: map[string]string{
			"upc:images":      "build/images.json",
			"upc:kubeconfig":  "kube/config",
			"upc:namespace":   "upc-lh",
			"upc:nodeAddress": "10.0.0.9",
			"upc:adminToken":  access.NewToken(access.PrefixUser),
			"upc:caCert":      caCert,
			"upc:caKey":       caKey,
		},
		ConfigSecretKeys: []string{"upc:adminToken", "upc:caKey"},
		Info:             &pulumirpc.ProgramInfo{RootDirectory: project, ProgramDirectory: program, EntryPoint: "."},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetError() != "" || resp.GetBail() {
		t.Fatalf("run: error %q, bail %v; engine log:\n%s", resp.GetError(), resp.GetBail(), strings.Join(f.logs, "\n"))
	}
	t.Logf("built and ran the program in %s", time.Since(start).Round(time.Millisecond))

	deps := f.registered("kubernetes:apps/v1:Deployment")
	if len(deps) != 1 {
		t.Fatalf("%d Deployments registered, want the router's", len(deps))
	}
	image := deepGet(deps[0].GetObject().AsMap(), "spec", "template", "spec", "containers", 0, "image")
	if want := m.Images["router"].Ref; image != want {
		t.Errorf("router image %v, want %s from the project's build/images.json", image, want)
	}
	provs := f.registered("pulumi:providers:kubernetes")
	if len(provs) != 1 || !strings.Contains(fmtValue(provs[0].GetObject().AsMap()["kubeconfig"]), "the language-host test's") {
		t.Errorf("kubernetes provider not built from the project's kube/config: %v", provs)
	}
	f.mu.Lock()
	outs := f.outputs
	f.mu.Unlock()
	if outs["routerUrl"] != "https://10.0.0.9:30430" {
		t.Errorf("stack outputs %v: routerUrl, want https://10.0.0.9:30430", outs)
	}
}

// deepGet walks maps and lists.
func deepGet(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func fmtValue(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

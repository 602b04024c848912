// Package cluster runs a local Kubernetes for UPC's kubernetes mode: binaries
// built from the Go module proxy into a versioned cache, a control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), kwok for
// simulated nodes and a real node (containerd, kubelet, kube-proxy). Every
// process, file, network and iptables chain it makes is removed by Down.
package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Versions of what the local cluster runs; the cache folder is keyed by them.
const (
	KubernetesVersion = "v1.37.2"
	StagingVersion    = "v0.37.2"
	EtcdVersion       = "v3.7.0"
	KwokVersion       = "v0.8.0"
)

// stagingModules are the k8s.io staging modules k8s.io/kubernetes's go.mod
// replaces with ./staging paths; the build module pins them to the tagged
// releases instead. sample-cli-plugin and sample-controller are left out: the
// proxy refuses them and nothing needs them.
var stagingModules = []string{
	"api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime", "client-go",
	"cloud-provider", "cluster-bootstrap", "code-generator", "component-base", "component-helpers",
	"controller-manager", "cri-api", "cri-client", "cri-streaming", "csi-translation-lib",
	"dynamic-resource-allocation", "endpointslice", "externaljwt", "kms", "kube-aggregator",
	"kube-controller-manager", "kube-proxy", "kube-scheduler", "kubectl", "kubelet", "metrics",
	"mount-utils", "pod-security-admission", "sample-apiserver", "streaming",
}

// kubePackages are built into binaries named for their last path element
// (the etcd server package's is renamed etcd). All are in the build
// module's tools.go: without kubectl and kube-proxy there, go build fails on
// missing go.sum entries.
var kubePackages = []string{
	"k8s.io/kubernetes/cmd/kube-apiserver",
	"k8s.io/kubernetes/cmd/kube-controller-manager",
	"k8s.io/kubernetes/cmd/kube-scheduler",
	"k8s.io/kubernetes/cmd/kubelet",
	"k8s.io/kubernetes/cmd/kubectl",
	"k8s.io/kubernetes/cmd/kube-proxy",
	"go.etcd.io/etcd/server/v3",
}

// phases build the control plane first (all the kwok tier needs), then the
// real node's binaries, then kubectl (for people, not for UPC), so a cold
// build on a busy machine makes the first tier usable early.
var phases = [][]string{
	{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"},
	{"kubelet", "kube-proxy"},
	{"kubectl"},
}

// Binaries are the file names Build leaves in the cache's bin folder.
var Binaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl", "kube-proxy", "etcd", "kwok"}

func pkgOf(bin string) string {
	if bin == "etcd" {
		return "go.etcd.io/etcd/server/v3"
	}
	return "k8s.io/kubernetes/cmd/" + bin
}

// CacheDir is $UPC_CACHE when set, else ~/.cache/upc/<versions>-<go version>.
func CacheDir() (string, error) {
	if d := os.Getenv("UPC_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	home, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find cache dir: %w", err)
	}
	key := fmt.Sprintf("k8s-%s-etcd-%s-kwok-%s-%s", KubernetesVersion, EtcdVersion, KwokVersion, runtime.Version())
	return filepath.Join(home, "upc", key), nil
}

// BinDir is where the cached binaries live.
func BinDir(cache string) string { return filepath.Join(cache, "bin") }

// Built reports whether every binary and the kwok stages are in the cache.
func Built(cache string) bool { return built(cache, Binaries) }

// ControlPlane is what the kwok tier needs: Up with --nodes fake builds only
// these (see BuildFor).
var ControlPlane = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kwok"}

func built(cache string, bins []string) bool {
	for _, b := range append(append([]string{}, bins...), "../kwok-stages.yaml") {
		if fi, err := os.Stat(filepath.Join(BinDir(cache), b)); err != nil || fi.Size() == 0 {
			return false
		}
	}
	return true
}

// Build compiles the Kubernetes binaries, etcd and kwok into cache/bin unless
// they are already there. The Kubernetes build runs in a module of its own in
// cache/build (k8s.io/kubernetes cannot be go installed: its go.mod has replace
// directives), so the project's go.mod never sees it. Progress goes to log;
// the go tool's output to cache/build.log.
func Build(ctx context.Context, log *slog.Logger, cache string) error {
	return BuildFor(ctx, log, cache, Binaries)
}

// BuildFor builds what bins need (the control plane and kwok first, the
// node's binaries and kubectl after) unless they are cached.
func BuildFor(ctx context.Context, log *slog.Logger, cache string, bins []string) error {
	if built(cache, bins) {
		log.Info("cluster binaries cached", "dir", BinDir(cache))
		return nil
	}
	if err := os.MkdirAll(BinDir(cache), 0o755); err != nil {
		return fmt.Errorf("make cache: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(cache, "build.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open build log: %w", err)
	}
	defer logf.Close()
	start := time.Now()
	if err := buildKube(ctx, log, cache, logf, phases[:1]); err != nil {
		return err
	}
	if err := buildKwok(ctx, log, cache, logf); err != nil {
		return err
	}
	if !built(cache, ControlPlane) || !slices.Equal(bins, ControlPlane) {
		if err := buildKube(ctx, log, cache, logf, phases[1:]); err != nil {
			return err
		}
	}
	if !built(cache, bins) {
		return fmt.Errorf("build cluster binaries: %s is incomplete after the build (see %s)", BinDir(cache), logf.Name())
	}
	log.Info("cluster binaries built", "dir", BinDir(cache), "took", time.Since(start).Round(time.Second))
	return nil
}

func have(cache string, bins ...string) bool {
	for _, b := range bins {
		if _, err := os.Stat(filepath.Join(BinDir(cache), b)); err != nil {
			return false
		}
	}
	return true
}

func buildKube(ctx context.Context, log *slog.Logger, cache string, out io.Writer, phases [][]string) error {
	var want []string
	for _, p := range phases {
		want = append(want, p...)
	}
	if have(cache, want...) {
		return nil
	}
	dir := filepath.Join(cache, "build")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make build module: %w", err)
	}
	var mod strings.Builder
	fmt.Fprintf(&mod, "module upc.local/k8sbuild\n\ngo 1.26\n\nrequire (\n\tk8s.io/kubernetes %s\n\tgo.etcd.io/etcd/server/v3 %s\n)\n\n", KubernetesVersion, EtcdVersion)
	for _, m := range stagingModules {
		fmt.Fprintf(&mod, "replace k8s.io/%s => k8s.io/%s %s\n", m, m, StagingVersion)
	}
	var tools strings.Builder
	tools.WriteString("//go:build tools\n\npackage k8sbuild\n\nimport (\n")
	for _, p := range kubePackages {
		fmt.Fprintf(&tools, "\t_ %q\n", p)
	}
	tools.WriteString(")\n")
	// A tidied module (go.sum present) is kept: tidy rewrites go.mod.
	if _, err := os.Stat(filepath.Join(dir, "go.sum")); err != nil {
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod.String()), 0o644); err != nil {
			return fmt.Errorf("write build module: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "tools.go"), []byte(tools.String()), 0o644); err != nil {
			return fmt.Errorf("write build module: %w", err)
		}
		log.Info("resolving Kubernetes modules (go mod tidy)", "module", dir)
		if err := goCmd(ctx, dir, out, nil, "mod", "tidy"); err != nil {
			return fmt.Errorf("tidy Kubernetes build module: %w", err)
		}
	}
	x := func(k, v string) string { return "-X " + k + "=" + v }
	ldflags := strings.Join([]string{"-s -w",
		x("k8s.io/component-base/version.gitVersion", KubernetesVersion),
		x("k8s.io/component-base/version.gitMajor", "1"),
		x("k8s.io/component-base/version.gitMinor", "37"),
		x("k8s.io/client-go/pkg/version.gitVersion", KubernetesVersion),
		x("k8s.io/client-go/pkg/version.gitMajor", "1"),
		x("k8s.io/client-go/pkg/version.gitMinor", "37"),
	}, " ")
	tmp := filepath.Join(cache, "bin.tmp")
	for _, bins := range phases {
		if have(cache, bins...) {
			continue
		}
		_ = os.RemoveAll(tmp)
		var pkgs []string
		for _, b := range bins {
			pkgs = append(pkgs, pkgOf(b))
		}
		what := "building " + strings.Join(bins, ", ")
		log.Info(what+" (all of Kubernetes: about 6 min cold on 2 idle cores, 17 s warm)", "log", filepath.Join(cache, "build.log"))
		stop := progress(log, what)
		args := append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", tmp + "/"}, pkgs...)
		err := goCmd(ctx, dir, out, []string{"CGO_ENABLED=0"}, args...)
		stop()
		if err != nil {
			return fmt.Errorf("build Kubernetes: %w", err)
		}
		for _, b := range bins {
			src := filepath.Join(tmp, b)
			if b == "etcd" {
				// go build names a /vN module's binary for the element before
				// the version: go.etcd.io/etcd/server/v3 → server.
				src = filepath.Join(tmp, "server")
			}
			if err := os.Rename(src, filepath.Join(BinDir(cache), b)); err != nil {
				return fmt.Errorf("install %s: %w", b, err)
			}
		}
	}
	return os.RemoveAll(tmp)
}

func buildKwok(ctx context.Context, log *slog.Logger, cache string, out io.Writer) error {
	dir := filepath.Join(cache, "kwok-build")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make kwok module: %w", err)
	}
	if _, err := os.Stat(filepath.Join(BinDir(cache), "kwok")); err != nil {
		log.Info("building kwok (about 2 min cold)", "version", KwokVersion)
		stop := progress(log, "building kwok")
		err := goCmd(ctx, dir, out, []string{"CGO_ENABLED=0", "GOBIN=" + BinDir(cache), "GOFLAGS=-trimpath -buildvcs=false"},
			"install", "-ldflags=-s -w", "sigs.k8s.io/kwok/cmd/kwok@"+KwokVersion)
		stop()
		if err != nil {
			return fmt.Errorf("build kwok: %w", err)
		}
	}
	// kwok exits with "no stages found" without its stage definitions, which
	// ship in its module: concatenate them into one config file.
	var modDir strings.Builder
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "sigs.k8s.io/kwok@"+KwokVersion)
	cmd.Dir = dir
	cmd.Stdout = &modDir
	cmd.Stderr = out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("download kwok module: %w", err)
	}
	src := jsonField(modDir.String(), "Dir")
	if src == "" {
		return fmt.Errorf("download kwok module: no Dir in %q", modDir.String())
	}
	// The "fast" stages: no delays (the "general" pod-ready waits 1 to 6 s).
	var files []string
	for _, f := range kwokStages {
		files = append(files, filepath.Join(src, "kustomize", "stage", f))
	}
	var stages strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read kwok stage: %w", err)
		}
		stages.WriteString("---\n")
		stages.Write(b)
		stages.WriteString("\n")
	}
	if stages.Len() == 0 {
		return fmt.Errorf("kwok stages: none found under %s", src)
	}
	return os.WriteFile(filepath.Join(cache, "kwok-stages.yaml"), []byte(stages.String()), 0o644)
}

// kwokStages are the stages the local cluster uses, in the kwok module.
var kwokStages = []string{
	"node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
	"pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml",
}

func goCmd(ctx context.Context, dir string, out io.Writer, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false")
	cmd.Env = append(cmd.Env, env...)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w", args[0], err)
	}
	return nil
}

// progress logs every 30 s until stopped, so a cold build is visibly alive.
func progress(log *slog.Logger, what string) func() {
	done := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				log.Info(what, "elapsed", time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done) }
}

func jsonField(js, key string) string {
	i := strings.Index(js, `"`+key+`": "`)
	if i < 0 {
		return ""
	}
	rest := js[i+len(key)+5:]
	j := strings.Index(rest, `"`)
	if j < 0 {
		return ""
	}
	return rest[:j]
}

package cluster

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/testskip"
)

// TestClusterNodeRuntime starts the real node's runtime without Kubernetes
// (needs root and Docker, not the cluster binaries): certificates, the
// Docker network, containerd with its CRI config, the pause image loaded,
// then Down leaves no process, network or folder behind.
func TestClusterNodeRuntime(t *testing.T) {
	if os.Geteuid() != 0 {
		testskip.Skip(t, "needs root")
	}
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	c := &run{o: Options{Dir: filepath.Join(dir, "cluster")}, log: log}
	defer func() {
		if err := Down(ctx, log, c.o.Dir); err != nil {
			t.Errorf("down: %v", err)
		}
		if _, err := os.Stat(c.o.Dir); err == nil {
			t.Error("down left the cluster folder")
		}
		if out, err := exec.Command("docker", "network", "inspect", NetworkName).CombinedOutput(); err == nil {
			t.Errorf("down left network %s: %s", NetworkName, out)
		}
		if running(c.o.Dir) {
			t.Error("down left a process")
		}
	}()
	for name, f := range map[string]func(context.Context) error{"certificates": c.certificates} {
		if err := f(ctx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if err := c.network(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.cni(); err != nil {
		t.Fatal(err)
	}
	if err := c.containerd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.pauseImage(ctx); err != nil {
		t.Fatal(err)
	}
	if err := LoadImages(ctx, log, c.o.Dir, PauseImage); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ctr", "-a", ContainerdSocket(c.o.Dir), "-n", "k8s.io", "images", "ls", "-q").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "docker.io/"+PauseImage) {
		t.Fatalf("pause image not in the node's containerd: %s %v", out, err)
	}
}

package imagestest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/internal/testskip"
)

func TestEnsureSkipsMissingService(t *testing.T) {
	m := Ensure(t, "no-such-service")
	if len(m.Images) != 0 {
		t.Errorf("Ensure built %v for a service without cmd/", m.Images)
	}
	ft := &fakeTB{TB: t}
	func() {
		defer func() { recover() }()
		Require(ft, "no-such-service")
	}()
	if !ft.failed || !strings.Contains(ft.msg, "no-such-service") {
		t.Errorf("Require did not fail naming the missing image: %q", ft.msg)
	}
}

// TestIntegrationEnsureBuildsOnce needs the Docker engine and at least one
// service's cmd/upc-<name>.
func TestIntegrationEnsureBuildsOnce(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	var name string
	for _, n := range []string{"count", "metrics", "pm", "router", "agent", "pipeline"} {
		if _, err := os.Stat(filepath.Join(root, "cmd", images.Binary(n), "main.go")); err == nil {
			name = n
			break
		}
	}
	if name == "" {
		testskip.Skip(t, "no cmd/upc-<service> exists yet to build")
	}
	m1 := Require(t, name)
	m2 := Require(t, name)
	if m1.Images[name] != m2.Images[name] {
		t.Errorf("second Ensure gave %v, first %v", m2.Images[name], m1.Images[name])
	}
	d, err := images.NewDocker()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ins, err := d.ImageInspect(context.Background(), images.Ref(name, Version))
	if err != nil {
		t.Fatal(err)
	}
	// One layer for the binary, one for each directory the service owns.
	want := 1 + len(images.OwnedDirs)
	if images.RunsAsRoot(name) {
		want = 1
	}
	if ins.ID != m1.Images[name].ID || len(ins.RootFS.Layers) != want {
		t.Errorf("image %s: id %s layers %d", name, ins.ID, len(ins.RootFS.Layers))
	}
}

// fakeTB records a Fatalf instead of stopping the test (a unit-test stand-in).
type fakeTB struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = fmt.Sprintf(format, args...)
	panic("fatal")
}

// Package imagestest gives tests the service images they need: each image is
// compiled and built once per test process (the Go build cache and the
// engine's build cache make later builds of unchanged code near-free, and give
// the same image ID), tagged upc/<name>:test.
package imagestest

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/images"
)

// Version is the tag test images carry: "test", or $UPC_TEST_IMAGE_TAG, so
// two checkouts testing on one engine (CI and a working tree) do not move
// each other's tags under their pins.
var Version = cmp.Or(os.Getenv("UPC_TEST_IMAGE_TAG"), "test")

var (
	mu    sync.Mutex
	built = map[string]images.Image{}
	// missing remembers services without a main package, so the log says it once.
	missing = map[string]bool{}
)

// Ensure returns a manifest holding the images of the named services, building
// those this process has not built yet. Services whose cmd/upc-<name> does not
// exist are left out, with a log line saying so; callers that need one check
// the manifest. Any other failure fails the test.
func Ensure(t testing.TB, names ...string) *images.Manifest {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	m := &images.Manifest{Version: Version, Images: map[string]images.Image{}}
	var todo []string
	for _, n := range names {
		if im, ok := built[n]; ok {
			m.Images[n] = im
			continue
		}
		if !images.HasService(root, n) {
			if !missing[n] {
				t.Logf("imagestest: skipping image %s: cmd/%s does not exist (yet)", n, images.Binary(n))
				missing[n] = true
			}
			continue
		}
		todo = append(todo, n)
	}
	if len(todo) == 0 {
		return m
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	unlock, err := lockBuilds()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	binDir, err := os.MkdirTemp("", "upc-imagestest-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(binDir)
	d, err := images.NewDocker()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, n := range todo {
		start := time.Now()
		if _, err := images.CompileService(ctx, images.CompileOptions{ModuleDir: root, OutDir: binDir, Version: Version}, n); err != nil {
			t.Fatalf("imagestest: %v", err)
		}
		im, err := images.Build(ctx, d, images.BuildOptions{Name: n, Binary: filepath.Join(binDir, images.Binary(n)), Version: Version})
		if err != nil {
			t.Fatalf("imagestest: %v", err)
		}
		t.Logf("imagestest: built %s (%s) in %s", im.Ref, im.ID[:19], time.Since(start).Round(time.Millisecond))
		built[n] = im
		m.Images[n] = im
	}
	return m
}

// Require is Ensure for tests that cannot run without every named image: it
// fails the test naming the images that could not be had.
func Require(t testing.TB, names ...string) *images.Manifest {
	t.Helper()
	m := Ensure(t, names...)
	var absent []string
	for _, n := range names {
		if _, ok := m.Images[n]; !ok {
			absent = append(absent, n)
		}
	}
	if len(absent) > 0 {
		t.Fatalf("imagestest: images %v are needed but their cmd/upc-<name> packages do not exist", absent)
	}
	return m
}

// ModuleRoot finds the folder holding go.mod, from the working directory up.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("imagestest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// lockBuilds serialises image builds across test processes (go test runs
// packages at once). Two processes building one image with a cold build
// cache would each make an image of their own and the last would take the
// tag, so the first one's pin would no longer be what its tag names, and
// the engine refuses that (a swapped image). Built one after the other, the
// second build comes from the cache: the same ID.
func lockBuilds() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "upc-imagestest.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("imagestest: build lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("imagestest: build lock: %w", err)
	}
	return func() { f.Close() }, nil
}

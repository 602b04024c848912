// Package testimage builds the router tests' instance image: a static Go
// HTTP server (testdata/server) compiled into a temporary directory and built
// FROM scratch through the Docker SDK, labelled upc.test=1. Nothing is
// pulled. Tests and benchmarks share it; it is not used in production.
package testimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/internal/images"
)

// Port is the port the test server listens on in its container.
const Port = 8080

var (
	once     sync.Once
	binary   []byte
	buildErr error
)

// compile builds the server once per process.
func compile() ([]byte, error) {
	once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		src := filepath.Join(filepath.Dir(file), "testdata", "server")
		dir, err := os.MkdirTemp("", "upc-testimage-")
		if err != nil {
			buildErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "server")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, ".")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("compile test server: %w: %s", err, b)
			return
		}
		binary, buildErr = os.ReadFile(out)
	})
	return binary, buildErr
}

// Build builds the image tagged ref (e.g. "upc-test/server:t1") and returns
// its image ID. Remove it with Remove.
func Build(ctx context.Context, cli *client.Client, ref string) (string, error) {
	return BuildVariant(ctx, cli, ref, "")
}

// BuildVariant is Build of a distinct image: the same server, labelled
// upc.test.variant=variant, so each variant has an ID of its own (tests that
// swap one image for another under a tag). "" is Build's image.
func BuildVariant(ctx context.Context, cli *client.Client, ref, variant string) (string, error) {
	bin, err := compile()
	if err != nil {
		return "", err
	}
	// As UPC's service images (internal/images): the binary, /data and
	// /tmp owned by the non-root user it runs as.
	dockerfile := "FROM scratch\nCOPY server /server\n" +
		"COPY --chown=" + images.User + " data /data\nCOPY --chown=" + images.User + " tmp /tmp\n" +
		"USER " + images.User + "\nEXPOSE 8080\nENTRYPOINT [\"/server\"]\n"
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, []byte(dockerfile)}, {"server", 0o755, bin}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return "", err
		}
		if _, err := tw.Write(f.data); err != nil {
			return "", err
		}
	}
	for _, d := range []string{"data/", "tmp/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o700, Typeflag: tar.TypeDir}); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	labels := map[string]string{"upc.test": "1"}
	if variant != "" {
		labels["upc.test.variant"] = variant
	}
	res, err := cli.ImageBuild(ctx, &buf, client.ImageBuildOptions{
		Tags: []string{ref}, Remove: true, ForceRemove: true,
		Labels: labels,
	})
	if err != nil {
		return "", fmt.Errorf("build %s: %w", ref, err)
	}
	defer res.Body.Close()
	if err := drain(res.Body); err != nil {
		return "", fmt.Errorf("build %s: %w", ref, err)
	}
	ins, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspect %s: %w", ref, err)
	}
	return ins.ID, nil
}

// drain reads the build's JSON stream and returns the first error in it.
func drain(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var msg struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &msg) == nil && msg.Error != "" {
			return fmt.Errorf("%s", strings.TrimSpace(msg.Error))
		}
	}
	return sc.Err()
}

// Remove deletes the image.
func Remove(ctx context.Context, cli *client.Client, ref string) error {
	_, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	return err
}

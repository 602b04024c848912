// Package images builds UPC's service images: static Go binaries
// (CGO_ENABLED=0) copied into images built FROM scratch through the Docker
// SDK, so no base image is ever pulled. Each build is recorded in a manifest
// (build/images.json) whose image IDs pin the catalog's entries.
package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/moby/moby/client"
)

// Labels every UPC image carries.
const (
	LabelImage   = "upc.image"
	LabelVersion = "upc.version"
)

// Repo is the repository every service image is tagged under: upc/<name>.
const Repo = "upc"

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// Ref is the tag of service name at version: "upc/<name>:<version>".
func Ref(name, version string) string { return Repo + "/" + name + ":" + TagSafe(version) }

// TagSafe turns a version (e.g. git describe output) into a valid image tag.
func TagSafe(v string) string {
	var b strings.Builder
	for _, r := range v {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := strings.TrimLeft(b.String(), ".-")
	if s == "" {
		s = "dev"
	}
	if len(s) > 128 {
		s = s[:128]
	}
	return s
}

// Binary is the file name of service name's binary: "upc-<name>".
func Binary(name string) string { return "upc-" + name }

// CompileOptions say how to compile service binaries.
type CompileOptions struct {
	// ModuleDir is the module root (the folder holding go.mod).
	ModuleDir string
	// OutDir receives the binaries.
	OutDir string
	// Version is linked into internal/version.Version.
	Version string
	// Go is the go command; default "go".
	Go string
}

// Compile builds the static binary of package pkg (e.g. "./cmd/upc-pm") into
// OutDir/out. CGO is off so the binary runs in a FROM scratch image.
func Compile(ctx context.Context, opts CompileOptions, pkg, out string) (string, error) {
	goCmd := opts.Go
	if goCmd == "" {
		goCmd = "go"
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return "", fmt.Errorf("compile %s: %w", pkg, err)
	}
	path := filepath.Join(opts.OutDir, out)
	ldflags := "-s -w -X github.com/e-mission/upc/internal/version.Version=" + opts.Version
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-ldflags", ldflags, "-o", path, pkg)
	cmd.Dir = opts.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("compile %s: %w: %s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return path, nil
}

// CompileService compiles ./cmd/upc-<name> into OutDir/upc-<name>.
func CompileService(ctx context.Context, opts CompileOptions, name string) (string, error) {
	return Compile(ctx, opts, "./cmd/"+Binary(name), Binary(name))
}

// HasService reports whether the module has the service's main package.
func HasService(moduleDir, name string) bool {
	_, err := os.Stat(filepath.Join(moduleDir, "cmd", Binary(name), "main.go"))
	return err == nil
}

// CheckStatic returns an error unless path is a statically linked ELF binary
// (no program interpreter), which is what a FROM scratch image can run.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("check %s: dynamically linked; build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}

// Docker is the part of the Docker SDK client that building needs.
type Docker interface {
	ImageBuild(ctx context.Context, buildContext io.Reader, options client.ImageBuildOptions) (client.ImageBuildResult, error)
	ImageInspect(ctx context.Context, imageID string, inspectOpts ...client.ImageInspectOption) (client.ImageInspectResult, error)
}

// NewDocker connects to the engine named by the environment (DOCKER_HOST, or
// the local socket), negotiating the API version (the engine here speaks 1.41).
func NewDocker() (*client.Client, error) {
	c, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("connect to docker: %w", err)
	}
	return c, nil
}

// BuildOptions describe one image.
type BuildOptions struct {
	// Name is the service name (image upc/<name>); the binary inside is upc-<name>.
	Name string
	// Binary is the static binary to copy in.
	Binary string
	// Version tags the image.
	Version string
	// Labels are added to the image beside upc.image and upc.version.
	Labels map[string]string
}

// UID and GID are the numeric user and group service images run as: no
// /etc/passwd is needed for numeric ids, and 65532 is the conventional
// "nonroot" of distroless images, owning nothing on the host.
const (
	UID = 65532
	GID = 65532
)

// User is UID:GID as Docker's USER and Config.User take it.
var User = fmt.Sprintf("%d:%d", UID, GID)

// RunsAsRoot reports whether service name's image keeps root as its user:
// the agent, and the router of Docker mode, drive the Docker engine through
// its socket, which root owns. Every other image runs as User.
func RunsAsRoot(name string) bool { return name == "agent" || name == "router" }

// OwnedDirs are the directories a non-root image holds for its user: /data
// (a new named volume mounted there takes the image's ownership, so the
// service can write its data) and /tmp.
var OwnedDirs = []string{"data", "tmp"}

// Dockerfile is the generated Dockerfile for a service binary: the binary
// (root's, read-only to the service) and, unless the image runs as root,
// /data and /tmp owned by UID:GID and USER UID:GID. Nothing else, so the
// image has no base to pull.
func Dockerfile(name string) string {
	b := Binary(name)
	var s strings.Builder
	s.WriteString("FROM scratch\nCOPY " + b + " /" + b + "\n")
	if !RunsAsRoot(name) {
		for _, d := range OwnedDirs {
			fmt.Fprintf(&s, "COPY --chown=%s %s /%s\n", User, d, d)
		}
		s.WriteString("USER " + User + "\n")
	}
	s.WriteString("ENTRYPOINT [\"/" + b + "\"]\n")
	return s.String()
}

// Build builds one FROM scratch image from a static binary, tags it
// upc/<name>:<version> and returns its reference and image ID.
func Build(ctx context.Context, d Docker, o BuildOptions) (Image, error) {
	if !nameRE.MatchString(o.Name) {
		return Image{}, fmt.Errorf("build image: %q is not a service name (lowercase letters, digits, dashes)", o.Name)
	}
	if err := CheckStatic(o.Binary); err != nil {
		return Image{}, fmt.Errorf("build image %s: %w", o.Name, err)
	}
	tarball, err := buildContext(o.Name, o.Binary)
	if err != nil {
		return Image{}, fmt.Errorf("build image %s: %w", o.Name, err)
	}
	ref := Ref(o.Name, o.Version)
	labels := map[string]string{LabelImage: o.Name, LabelVersion: o.Version}
	for k, v := range o.Labels {
		labels[k] = v
	}
	res, err := d.ImageBuild(ctx, tarball, client.ImageBuildOptions{
		Tags:        []string{ref},
		Dockerfile:  "Dockerfile",
		Labels:      labels,
		Remove:      true,
		ForceRemove: true,
	})
	if err != nil {
		return Image{}, fmt.Errorf("build image %s: %w", o.Name, err)
	}
	defer res.Body.Close()
	if err := readBuildStream(res.Body); err != nil {
		return Image{}, fmt.Errorf("build image %s: %w", o.Name, err)
	}
	ins, err := d.ImageInspect(ctx, ref)
	if err != nil {
		return Image{}, fmt.Errorf("inspect image %s: %w", ref, err)
	}
	if !strings.HasPrefix(ins.ID, "sha256:") {
		return Image{}, fmt.Errorf("inspect image %s: unexpected id %q", ref, ins.ID)
	}
	return Image{Ref: ref, ID: ins.ID}, nil
}

// buildContext is the in-memory tar the engine builds from: the generated
// Dockerfile, the binary and the directories the image's user owns.
func buildContext(name, binary string) (io.Reader, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// A fixed time keeps the context, and so the engine's build cache, stable.
	mtime := time.Unix(0, 0)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{
		{"Dockerfile", 0o644, []byte(Dockerfile(name))},
		{Binary(name), 0o755, bin},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if !RunsAsRoot(name) {
		// Empty directories for COPY --chown (the classic builder copies a
		// directory's contents and makes the target owned as asked).
		for _, d := range OwnedDirs {
			if err := tw.WriteHeader(&tar.Header{Name: d + "/", Mode: 0o700, ModTime: mtime, Typeflag: tar.TypeDir}); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}

// readBuildStream drains the engine's JSON message stream and returns the
// build's error, if any (the HTTP status is 200 even when a build fails).
func readBuildStream(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var last string
	for sc.Scan() {
		var m struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		if m.Error != "" {
			return errors.New(strings.TrimSpace(m.Error))
		}
		if s := strings.TrimSpace(m.Stream); s != "" {
			last = s
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read build output: %w (last: %s)", err, last)
	}
	return nil
}

// BuildAll builds upc/<name>:<version> for every name from binDir/upc-<name>
// and returns the manifest of what it built. It stops at the first failure.
func BuildAll(ctx context.Context, d Docker, binDir, version string, names []string, labels map[string]string) (*Manifest, error) {
	if len(names) == 0 {
		return nil, errors.New("build images: no image named")
	}
	m := &Manifest{Version: version, Images: map[string]Image{}}
	for _, name := range names {
		bin := filepath.Join(binDir, Binary(name))
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("build image %s: binary %s: %w (is there a cmd/%s?)", name, bin, err, Binary(name))
		}
		im, err := Build(ctx, d, BuildOptions{Name: name, Binary: bin, Version: version, Labels: labels})
		if err != nil {
			return nil, err
		}
		m.Images[name] = im
	}
	return m, nil
}

package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/harness/cluster"
	"github.com/e-mission/upc/infra/auto"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/internal/testskip"
	"github.com/e-mission/upc/router/routerclient"
	kinddefaults "sigs.k8s.io/kind/pkg/apis/config/defaults"
)

// TestIntegrationInfraExistingLocalCluster runs `upc infra up --stack
// existing` (see runInfra) against the local real-node cluster (make
// cluster-up), calls the router the stack deployed over TLS, verified by
// the stack's CA (the caCert `up --ca-out` wrote out; a plain-HTTP call and
// a client without that CA are refused), launches a PM through it as its
// admin (the token `up --admin-token-file` wrote out; a token-less call is
// refused), and reaches the PM over TLS too, verified by the same CA;
// rotates the CA (`up --rotate-ca`) and sees the router answer with the
// new one alone; then runs
// `upc infra destroy` and checks that nothing of the stack is left. It needs
// the engine and the plugins of `make tools` and the images of `make
// images`; `make test-infra` provides all three and sets UPC_TEST_INFRA=1.
func TestIntegrationInfraExistingLocalCluster(t *testing.T) {
	if os.Getenv("UPC_TEST_INFRA") != "1" {
		testskip.Skip(t, "infra integration test: run by `make test-infra` (UPC_TEST_INFRA=1)")
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auto.FindPulumi(); err != nil {
		t.Fatalf("%v", err)
	}
	dir, err := cluster.StateDir()
	if err != nil {
		t.Fatal(err)
	}
	if !cluster.Running(dir) || !cluster.HasRealNode(dir) {
		testskip.Skipf(t, "not run: no local cluster with a real node in %s (make cluster-up NODES=real)", dir)
	}
	manifestPath := filepath.Join(root, "build", "images.json")
	m, err := images.LoadManifest(manifestPath)
	if err != nil {
		t.Fatalf("images (make images): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var refs []string
	for _, n := range slices.Sorted(maps.Keys(m.Images)) {
		refs = append(refs, m.Images[n].Ref)
	}
	// Idempotent: the node holds this build's images whatever cluster-up loaded.
	if err := cluster.LoadImages(ctx, testLog{t}, dir, refs...); err != nil {
		t.Fatalf("load images into the real node: %v", err)
	}

	const ns = "upc-infra-it"
	port := freeTCPPort(t)
	state := t.TempDir()
	hostPath := filepath.Join(t.TempDir(), "pv")
	args := []string{
		"--stack", "existing", "--project", root, "--state", state,
		"--config", "kubeconfig=" + cluster.Kubeconfig(dir),
		"--config", "images=" + manifestPath,
		"--config", "namespace=" + ns,
		"--config", fmt.Sprintf("routerPort=%d", port),
		"--config", "routerNodePort=30431",
		"--config", "nodeSelector=" + cluster.LabelNode + "=real",
		"--config", "nodeAddress=" + cluster.NodeIP,
		"--config", "hostPathDir=" + hostPath,
		"--config", "routerHostNetwork=true",
		"--config", "apiServer=" + strings.TrimPrefix(cluster.APIServer, "https://"),
	}
	upc := func(sub ...string) (string, error) { return runInfra(ctx, t, args, sub...) }
	// Per-user volumes outlive the stack by design: remove this test's, by
	// label, however it ends (registered first, so it runs after destroy).
	t.Cleanup(func() {
		runKubectl(context.Background(), dir, "delete", "pv", "-l", "upc.namespace="+ns, "--wait=false")
	})
	destroyed := false
	t.Cleanup(func() {
		if !destroyed {
			if _, err := upc("destroy", "--remove"); err != nil {
				t.Errorf("clean-up destroy: %v", err)
			}
		}
	})

	start := time.Now()
	out, err := upc("preview")
	if err != nil {
		t.Fatalf("preview: %v", err)
	}
	if !strings.Contains(out, "create") {
		t.Errorf("preview summary %q plans no creation", out)
	}
	t.Logf("preview: %s (%s)", strings.TrimSpace(out), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	out, err = upc("up", "--admin-token-file", tokenFile, "--ca-out", caFile)
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	adminToken := readAdminToken(t, tokenFile, out)
	caPEM, roots := readCA(t, caFile, out, "existing")
	upTime := time.Since(start)
	url := regexp.MustCompile(`routerUrl: (\S+)`).FindStringSubmatch(out)
	if url == nil {
		t.Fatalf("up printed no routerUrl:\n%s", out)
	}
	if !strings.HasPrefix(url[1], "https://") {
		t.Fatalf("routerUrl %s is not https", url[1])
	}
	t.Logf("up: %s; router at %s", upTime.Round(time.Millisecond), url[1])

	// A second up changes nothing, the admin token and the CA included
	// (made once and kept in the stack's settings).
	tokenFile2 := filepath.Join(t.TempDir(), "admin-token")
	caFile2 := filepath.Join(t.TempDir(), "ca.crt")
	if out2, err := upc("up", "--admin-token-file", tokenFile2, "--ca-out", caFile2); err != nil || !strings.Contains(out2, "routerUrl: "+url[1]) {
		t.Errorf("second up: %v\n%s", err, out2)
	} else {
		if tok2 := readAdminToken(t, tokenFile2, out2); tok2 != adminToken {
			t.Error("second up changed the admin token")
		}
		if ca2, _ := readCA(t, caFile2, out2, "existing"); ca2 != caPEM {
			t.Error("second up changed the stack's CA")
		}
	}

	tlsClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientConfig(roots, nil)}}
	rc, err := routerclient.New(url[1], routerclient.WithToken(adminToken), routerclient.WithHTTPClient(tlsClient))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err = rc.Health(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router at %s never healthy: %v", url[1], err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("router healthy over TLS, verified by the stack's CA")
	// Plain HTTP to the router's port is refused: Go's TLS server answers a
	// plain request 400 and serves nothing.
	plainURL := "http://" + strings.TrimPrefix(url[1], "https://") + "/healthz"
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(plainURL); err != nil {
		t.Logf("plain HTTP to the router: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the router: %s, want 400 (a TLS server's refusal)", resp.Status)
		} else {
			t.Logf("plain HTTP to the router refused: %s", resp.Status)
		}
	}
	// A client that does not trust the stack's CA (the system's roots) does
	// not accept the router's certificate.
	if untrusting, err := routerclient.New(url[1]); err != nil {
		t.Fatal(err)
	} else if err := untrusting.Health(ctx); err == nil {
		t.Error("the router's certificate verified without the stack's CA")
	} else {
		t.Logf("without the stack's CA: %v", err)
	}
	// Without the token the deployed router answers /healthz alone.
	anon, err := routerclient.New(url[1], routerclient.WithHTTPClient(tlsClient))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.List(ctx, ""); err == nil {
		t.Error("the deployed router listed instances for a caller with no token")
	} else {
		t.Logf("token-less list refused: %v", err)
	}
	if who, err := rc.Whoami(ctx); err != nil {
		t.Errorf("whoami with the stack's admin token: %v", err)
	} else {
		t.Logf("admin token: identity %+v", who)
	}
	start = time.Now()
	inst, err := rc.Launch(ctx, "pm", "infra-it-user")
	if err != nil {
		t.Fatalf("launch a PM through the deployed router: %v", err)
	}
	t.Logf("PM %s at %s (%s, digest %s) in %s", inst.ID, inst.Address, inst.Image, inst.Digest, time.Since(start).Round(time.Millisecond))
	if inst.Digest != m.Images["pm"].ID {
		t.Errorf("PM ran digest %s, want the manifest's %s", inst.Digest, m.Images["pm"].ID)
	}
	if !strings.HasPrefix(inst.Address, "https://") {
		t.Errorf("PM address %s is not https", inst.Address)
	}
	// The PM serves the certificate the router issued it from the stack's
	// CA; clients check its chain and its instance name.
	resp, err := certs.InstanceClient(roots, 30*time.Second).Get(inst.Address + "/healthz")
	if err != nil {
		t.Fatalf("reach the PM at %s over TLS: %v", inst.Address, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PM /healthz: %s", resp.Status)
	}
	if err := rc.Delete(ctx, inst.ID); err != nil {
		t.Errorf("delete the PM: %v", err)
	}

	// Rotating the CA: up --rotate-ca stores a new one and rolls the
	// router, which then answers with a certificate of the new CA alone.
	start = time.Now()
	caFile3 := filepath.Join(t.TempDir(), "ca.crt")
	if out3, err := upc("up", "--rotate-ca", "--ca-out", caFile3); err != nil {
		t.Errorf("up --rotate-ca: %v\n%s", err, out3)
	} else if ca3, roots3 := readCA(t, caFile3, out3, "existing"); ca3 == caPEM {
		t.Error("up --rotate-ca kept the old CA")
	} else {
		rotated, err := routerclient.New(url[1], routerclient.WithHTTPClient(&http.Client{
			Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientConfig(roots3, nil)},
		}))
		if err != nil {
			t.Fatal(err)
		}
		deadline = time.Now().Add(2 * time.Minute)
		for {
			if err = rotated.Health(ctx); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("router never answered with the new CA's certificate: %v", err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err := rc.Health(ctx); err == nil {
			t.Error("after --rotate-ca the router's certificate still verifies with the old CA")
		}
		t.Logf("CA rotated, the router rolled and verified with the new CA alone: %s", time.Since(start).Round(time.Millisecond))
	}

	start = time.Now()
	if _, err := upc("destroy", "--remove"); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	destroyed = true
	t.Logf("destroy: %s", time.Since(start).Round(time.Millisecond))

	// Nothing of the stack is left: no namespace (its pods, services and
	// claims with it), no cluster role or binding, no router port.
	kubectl := func(a ...string) string {
		b, _ := runKubectl(ctx, dir, a...)
		return b
	}
	deadline = time.Now().Add(2 * time.Minute)
	// --ignore-not-found: kubectl's NotFound message names the namespace too.
	for strings.Contains(kubectl("get", "namespace", ns, "-o", "name", "--ignore-not-found"), ns) {
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s still there after destroy", ns)
		}
		time.Sleep(time.Second)
	}
	for _, kind := range []string{"clusterrole", "clusterrolebinding"} {
		if got := kubectl("get", kind, "upc-router-"+ns, "-o", "name", "--ignore-not-found"); strings.TrimSpace(got) != "" {
			t.Errorf("%s left after destroy: %s", kind, got)
		}
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Errorf("router port %d still answers after destroy", port)
	}
	// The per-user volume is user data the router keeps (reclaim policy
	// Retain): it outlives the stack by design; the clean-up registered at
	// the start removes it, by label.
	if pvs := kubectl("get", "pv", "-l", "upc.namespace="+ns, "-o", "name"); strings.TrimSpace(pvs) == "" {
		t.Error("the PM's per-user volume did not outlive the stack")
	}
}

// runInfra runs `upc infra SUB... ARGS...`, logging its progress: through
// the upc binary $UPC_TEST_UPC_BIN names (which runs the upc-infra beside
// it; `make test-infra` builds both), else this command in process.
func runInfra(ctx context.Context, t *testing.T, args []string, sub ...string) (string, error) {
	var out, errOut bytes.Buffer
	argv := append(append([]string{}, sub...), args...)
	var err error
	if bin := os.Getenv("UPC_TEST_UPC_BIN"); bin != "" {
		cmd := exec.CommandContext(ctx, bin, append([]string{"infra"}, argv...)...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = time.Minute
		err = cmd.Run()
	} else {
		cmd := newRootCmd(&out, &errOut)
		cmd.SetArgs(argv)
		err = cmd.ExecuteContext(ctx)
	}
	t.Logf("upc infra %s: %s", strings.Join(sub, " "), tail(errOut.String(), 3000))
	return out.String(), err
}

// readAdminToken reads the token `up --admin-token-file` wrote and checks
// that up printed no secret.
func readAdminToken(t *testing.T, path, upOut string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("admin token file: %v", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("admin token file mode %v, want 0600", fi.Mode().Perm())
	}
	tok := strings.TrimSpace(string(b))
	if !strings.HasPrefix(tok, access.PrefixUser) {
		t.Fatalf("admin token %.8s… is not a router token", tok)
	}
	if strings.Contains(upOut, tok) {
		t.Error("up printed the admin token")
	}
	if !strings.Contains(upOut, "adminToken: [secret]") {
		t.Errorf("up did not list the adminToken output as a secret:\n%s", upOut)
	}
	return tok
}

// readCA reads the CA certificate `up --ca-out` wrote: the stack's own CA
// (named after stackName), which up named by its fingerprint, not printed.
func readCA(t *testing.T, path, upOut, stackName string) (string, *x509.CertPool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("CA file: %v", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("CA file %s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("CA file: %v", err)
	}
	if !c.IsCA || c.Subject.CommonName != auto.CAName(stackName) {
		t.Errorf("CA file: %q (CA %v), want the stack's CA %q", c.Subject.CommonName, c.IsCA, auto.CAName(stackName))
	}
	if strings.Contains(upOut, "BEGIN CERTIFICATE") || !strings.Contains(upOut, "caCert: \""+c.Subject.CommonName+"\"") {
		t.Errorf("up did not name the caCert output (and only name it):\n%s", upOut)
	}
	pool, err := certs.Pool(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), pool
}

type testLog struct{ t *testing.T }

func (l testLog) Info(msg string, args ...any) { l.t.Log(append([]any{msg}, args...)...) }

func freeTCPPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// runKubectl runs the cluster's own kubectl (built with it) as its admin.
func runKubectl(ctx context.Context, dir string, args ...string) (string, error) {
	bin := "kubectl"
	if cache, err := cluster.CacheDir(); err == nil {
		if p := filepath.Join(cluster.BinDir(cache), "kubectl"); fileExists(p) {
			bin = p
		}
	}
	out, err := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", cluster.Kubeconfig(dir)}, args...)...).CombinedOutput()
	return string(out), err
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestIntegrationInfraKind runs `upc infra up --stack kind` and destroy
// where a kind node image is on the local Docker engine (none can be pulled
// here, so elsewhere it reports why it did not run).
func TestIntegrationInfraKind(t *testing.T) {
	if os.Getenv("UPC_TEST_INFRA") != "1" {
		testskip.Skip(t, "infra integration test: run by `make test-infra` (UPC_TEST_INFRA=1)")
	}
	image := os.Getenv("UPC_KIND_NODE_IMAGE")
	if image == "" {
		image = kinddefaults.Image
	}
	d, err := images.NewDocker()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if _, err := d.ImageInspect(ctx, image); err != nil {
		if _, err2 := d.ImageInspect(ctx, strings.SplitN(image, "@", 2)[0]); err2 != nil {
			testskip.Skipf(t, "not run: no kind node image %s on the local Docker engine, and none can be pulled here (set UPC_KIND_NODE_IMAGE to one that is loaded)", image)
		}
	}
	root, _ := filepath.Abs("../../..")
	name := fmt.Sprintf("upc-it-%d", time.Now().Unix()%100000)
	args := []string{"--stack", "kind", "--project", root, "--state", t.TempDir(),
		"--config", "kindClusterName=" + name, "--config", "kindNodeImage=" + image,
		"--config", "kindWorkers=0", "--config", "images=" + filepath.Join(root, "build", "images.json")}
	run := func(sub ...string) (string, error) { return runInfra(ctx, t, args, sub...) }
	start := time.Now()
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	out, err := run("up", "--ca-out", caFile)
	t.Cleanup(func() {
		if _, err := run("destroy", "--remove"); err != nil {
			t.Errorf("destroy: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Logf("up in %s:\n%s", time.Since(start).Round(time.Second), out)
	url := regexp.MustCompile(`routerUrl: (\S+)`).FindStringSubmatch(out)
	if url == nil {
		t.Fatalf("no routerUrl in\n%s", out)
	}
	_, roots := readCA(t, caFile, out, "kind")
	rc, err := routerclient.New(url[1], routerclient.WithHTTPClient(&http.Client{
		Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientConfig(roots, nil)},
	}))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for rc.Health(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("router at %s never healthy", url[1])
		}
		time.Sleep(time.Second)
	}
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
)

// TestIntegrationInfraPulumiCLI runs `pulumi up --stack existing` and
// `pulumi destroy` with the Pulumi CLI from the repository's root, as a user
// does: the engine of `make tools` (and beside it the Go language host, the
// stand-in where no real one is installed) builds infra/ and runs it there,
// with the stack file's relative upc:images (build/images.json) resolved
// against the root. The stack's settings are a copy of Pulumi.existing.yaml
// (--config-file, so the repository's file is left alone) pointed at the
// local real-node cluster; state goes to a file backend of the test's own.
// It checks the outputs a user copies (routerUrl, caCert, adminToken,
// upcClient), calls the router with them, launches a PM through it and
// reaches it, then destroys the stack and checks nothing of it is left.
func TestIntegrationInfraPulumiCLI(t *testing.T) {
	if os.Getenv("UPC_TEST_INFRA") != "1" {
		testskip.Skip(t, "infra integration test: run by `make test-infra` (UPC_TEST_INFRA=1)")
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	engineRoot, err := auto.FindPulumi()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := cluster.StateDir()
	if err != nil {
		t.Fatal(err)
	}
	if !cluster.Running(dir) || !cluster.HasRealNode(dir) {
		testskip.Skipf(t, "not run: no local cluster with a real node in %s (make cluster-up NODES=real)", dir)
	}
	m, err := images.LoadManifest(filepath.Join(root, "build", "images.json"))
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

	const ns, stackName = "upc-infra-cli", "existing"
	work := t.TempDir()
	state := filepath.Join(work, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	stackFile := filepath.Join(work, "Pulumi.existing.yaml")
	b, err := os.ReadFile(filepath.Join(root, "Pulumi.existing.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stackFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"PATH="+filepath.Join(engineRoot, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"),
		"PULUMI_BACKEND_URL=file://"+state,
		"PULUMI_CONFIG_PASSPHRASE=upc-cli-test",
		"PULUMI_SKIP_UPDATE_CHECK=true",
		"PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true",
	)
	pulumiBin := filepath.Join(engineRoot, "bin", "pulumi")
	pulumi := func(args ...string) (string, error) {
		start := time.Now()
		cmd := exec.CommandContext(ctx, pulumiBin, args...)
		cmd.Dir = root
		cmd.Env = env
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = time.Minute
		err := cmd.Run()
		shown, stdout := strings.Join(args, " "), tail(out.String(), 2500)
		if strings.Contains(shown, "--secret") || strings.Contains(shown, "--show-secrets") {
			// Neither the secret given nor the secrets shown go to the log.
			shown, stdout = args[0]+" "+args[1]+" …", fmt.Sprintf("(%d bytes, secrets: not logged)", out.Len())
		}
		t.Logf("pulumi %s (%s): %s%s", shown, time.Since(start).Round(time.Millisecond), stdout, tail(errOut.String(), 2500))
		if err != nil {
			return out.String(), fmt.Errorf("pulumi %s: %w: %s", args[0], err, tail(errOut.String(), 2000))
		}
		return out.String(), nil
	}
	cf := "--config-file=" + stackFile
	initStack(t, root, stackName, stackFile, func() error { _, err := pulumi("stack", "init", stackName, "--non-interactive"); return err })
	t.Cleanup(func() {
		runKubectl(context.Background(), dir, "delete", "pv", "-l", "upc.namespace="+ns, "--wait=false")
	})
	destroyed := false
	t.Cleanup(func() {
		if !destroyed {
			if _, err := pulumi("destroy", "--stack", stackName, "--yes", "--non-interactive", "--skip-preview", cf); err != nil {
				t.Errorf("clean-up destroy: %v", err)
			}
		}
	})
	caCert, caKey, err := auto.NewCA(stackName)
	if err != nil {
		t.Fatal(err)
	}
	port := freeTCPPort(t)
	// upc:images stays the stack file's relative build/images.json.
	plainSettings := [][2]string{
		{"upc:kubeconfig", cluster.Kubeconfig(dir)},
		{"upc:namespace", ns},
		{"upc:routerPort", fmt.Sprint(port)},
		{"upc:routerNodePort", "30432"},
		{"upc:nodeSelector", cluster.LabelNode + "=real"},
		{"upc:nodeAddress", cluster.NodeIP},
		{"upc:hostPathDir", filepath.Join(work, "pv")},
		{"upc:apiServer", strings.TrimPrefix(cluster.APIServer, "https://")},
		{"upc:caCert", caCert},
	}
	for _, kv := range plainSettings {
		if _, err := pulumi("config", "set", "--stack", stackName, cf, kv[0], "--", kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	token := access.NewToken(access.PrefixUser)
	for _, kv := range [][2]string{{"upc:adminToken", token}, {"upc:caKey", caKey}} {
		if _, err := pulumi("config", "set", "--stack", stackName, cf, "--secret", kv[0], "--", kv[1]); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	if _, err := pulumi("up", "--stack", stackName, "--yes", "--non-interactive", "--skip-preview", cf); err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Logf("pulumi up: %s", time.Since(start).Round(time.Millisecond))
	raw, err := pulumi("stack", "output", "--stack", stackName, "--json", "--show-secrets")
	if err != nil {
		t.Fatal(err)
	}
	var outs map[string]any
	if err := json.Unmarshal([]byte(raw), &outs); err != nil {
		t.Fatalf("stack output: %v", err)
	}
	url, _ := outs["routerUrl"].(string)
	if want := fmt.Sprintf("https://%s:30432", cluster.NodeIP); url != want {
		t.Errorf("routerUrl %q, want %q", url, want)
	}
	// The program reads both settings with surrounding white space trimmed
	// (a PEM's last newline).
	if got, _ := outs["caCert"].(string); got != strings.TrimSpace(caCert) {
		t.Errorf("the caCert output (%d bytes) is not the stack's setting (%d bytes)", len(got), len(caCert))
	}
	if got, _ := outs["adminToken"].(string); got != token {
		t.Errorf("the adminToken output (%d characters) is not the stack's setting", len(got))
	}
	// The one line a user copies, in the project folder where they ran
	// pulumi up: run it with `upc` standing for a function that records its
	// arguments, and check the files it wrote (then remove them).
	line, _ := outs["upcClient"].(string)
	for _, f := range []string{"upc.args", "upc-ca.crt", "upc-admin.token"} {
		if _, err := os.Stat(filepath.Join(root, f)); err == nil {
			t.Fatalf("%s is in the project folder already: not overwriting it", f)
		}
		t.Cleanup(func() { os.Remove(filepath.Join(root, f)) })
	}
	sh := exec.CommandContext(ctx, "bash", "-c", `upc() { printf '%s\n' "$@" > upc.args; }; eval "$1" --user alice whoami`, "bash", line)
	sh.Dir, sh.Env = root, env
	if b, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the upcClient line %q: %v\n%s", line, err, b)
	}
	args, _ := os.ReadFile(filepath.Join(root, "upc.args"))
	if want := "client\n--router\n" + url + "\n--ca\nupc-ca.crt\n--token-file\nupc-admin.token\n--user\nalice\nwhoami\n"; string(args) != want {
		t.Errorf("the upcClient line ran upc with\n%s\nwant\n%s", args, want)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "upc-ca.crt")); strings.TrimSpace(string(b)) != strings.TrimSpace(caCert) {
		t.Error("the upcClient line's upc-ca.crt is not the stack's CA certificate")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "upc-admin.token")); strings.TrimSpace(string(b)) != token {
		t.Error("the upcClient line's upc-admin.token is not the admin token")
	}
	if fi, err := os.Stat(filepath.Join(root, "upc-admin.token")); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("upc-admin.token mode %v, want 0600", fi.Mode().Perm())
	}

	roots, err := certs.Pool([]byte(caCert))
	if err != nil {
		t.Fatal(err)
	}
	tlsClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientConfig(roots, nil)}}
	rc, err := routerclient.New(url, routerclient.WithToken(token), routerclient.WithHTTPClient(tlsClient))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err = rc.Health(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router at %s never healthy: %v", url, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	start = time.Now()
	inst, err := rc.Launch(ctx, "pm", "infra-cli-user")
	if err != nil {
		t.Fatalf("launch a PM through the router pulumi up deployed: %v", err)
	}
	resp, err := certs.InstanceClient(roots, 30*time.Second).Get(inst.Address + "/healthz")
	if err != nil {
		t.Fatalf("reach the PM at %s: %v", inst.Address, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PM /healthz: %s", resp.Status)
	}
	t.Logf("PM %s answered at %s, %s after the launch began", inst.ID, inst.Address, time.Since(start).Round(time.Millisecond))
	if err := rc.Delete(ctx, inst.ID); err != nil {
		t.Errorf("delete the PM: %v", err)
	}

	start = time.Now()
	if _, err := pulumi("destroy", "--stack", stackName, "--yes", "--non-interactive", "--skip-preview", cf); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	destroyed = true
	t.Logf("pulumi destroy: %s", time.Since(start).Round(time.Millisecond))
	if _, err := pulumi("stack", "rm", stackName, "--yes", "--non-interactive", "--preserve-config"); err != nil {
		t.Errorf("stack rm: %v", err)
	}
	deadline = time.Now().Add(2 * time.Minute)
	for {
		out, _ := runKubectl(ctx, dir, "get", "namespace", ns, "-o", "name", "--ignore-not-found")
		if !strings.Contains(out, ns) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s still there after destroy", ns)
		}
		time.Sleep(time.Second)
	}
	for _, kind := range []string{"clusterrole", "clusterrolebinding"} {
		if out, _ := runKubectl(ctx, dir, "get", kind, "upc-router-"+ns, "-o", "name", "--ignore-not-found"); strings.TrimSpace(out) != "" {
			t.Errorf("%s left after destroy: %s", kind, out)
		}
	}
}

// TestIntegrationInfraPreviewGKE runs `pulumi preview --stack gke` with the
// CLI from the repository's root and no cloud credentials: the language host
// builds and runs the program, the stack's settings (the stack file's
// relative upc:images among them) are read and validated, and the preview
// goes as far as Pulumi allows without Google: it stops at the first GCP
// resource when the gcp provider plugin is not installed (this machine's
// module proxy does not serve it), and else where the provider needs
// credentials. Any other failure (the program's, the settings') fails the
// test.
func TestIntegrationInfraPreviewGKE(t *testing.T) {
	if os.Getenv("UPC_TEST_INFRA") != "1" {
		testskip.Skip(t, "infra integration test: run by `make test-infra` (UPC_TEST_INFRA=1)")
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	engineRoot, err := auto.FindPulumi()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "build", "images.json")); err != nil {
		t.Fatalf("images (make images): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := t.TempDir()
	stackFile := filepath.Join(work, "Pulumi.gke.yaml")
	b, err := os.ReadFile(filepath.Join(root, "Pulumi.gke.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stackFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"PATH="+filepath.Join(engineRoot, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"),
		"PULUMI_BACKEND_URL=file://"+filepath.Join(work, "state"),
		"PULUMI_CONFIG_PASSPHRASE=upc-preview-test",
		"PULUMI_SKIP_UPDATE_CHECK=true",
		"PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true",
		// No Google credentials, whatever this machine has.
		"GOOGLE_APPLICATION_CREDENTIALS="+filepath.Join(work, "none.json"),
		"CLOUDSDK_CONFIG="+filepath.Join(work, "gcloud"),
	)
	if err := os.MkdirAll(filepath.Join(work, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	pulumi := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(engineRoot, "bin", "pulumi"), args...)
		cmd.Dir, cmd.Env = root, env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	caCert, caKey, err := auto.NewCA("gke")
	if err != nil {
		t.Fatal(err)
	}
	cf := "--config-file=" + stackFile
	initStack(t, root, "gke", stackFile, func() error {
		out, err := pulumi("stack", "init", "gke", "--non-interactive")
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
	steps := [][]string{
		{"config", "set", "--stack", "gke", cf, "upc:gcpProject", "my-project"},
		{"config", "set", "--stack", "gke", cf, "upc:sourceRanges", "203.0.113.7/32"},
		{"config", "set", "--stack", "gke", cf, "upc:caCert", "--", caCert},
		{"config", "set", "--stack", "gke", cf, "--secret", "upc:caKey", "--", caKey},
		{"config", "set", "--stack", "gke", cf, "--secret", "upc:adminToken", "--", access.NewToken(access.PrefixUser)},
	}
	for _, s := range steps {
		if out, err := pulumi(s...); err != nil {
			t.Fatalf("pulumi %s %s: %v\n%s", s[0], s[1], err, out)
		}
	}
	start := time.Now()
	out, err := pulumi("preview", "--stack", "gke", cf, "--non-interactive")
	t.Logf("pulumi preview --stack gke (%s):\n%s", time.Since(start).Round(time.Millisecond), tail(out, 4000))
	switch {
	case err == nil:
		t.Log("the preview ran through: a gcp provider plugin is installed and needed no credentials for it")
	case strings.Contains(out, "no resource plugin 'pulumi-resource-gcp' found"):
		t.Log("the program ran and its settings were valid; the preview stopped at the gcp provider plugin, which is not installed here")
	case strings.Contains(out, "credentials") || strings.Contains(out, "could not find default credentials"):
		t.Log("the program ran; the preview stopped where the gcp provider needs credentials")
	default:
		t.Fatalf("preview: %v", err)
	}
	for _, bad := range []string{"upc:images", "configuration of stack", "error in compiling Go", "go build in"} {
		if strings.Contains(out, bad) {
			t.Errorf("the preview failed in the program or its settings (%q)", bad)
		}
	}
}

// initStack runs init (`pulumi stack init NAME`), which writes the stack's
// secrets salt into the project's Pulumi.NAME.yaml (it has no
// --config-file): the repository's file is put back as it was and the
// lines init added go to stackFile, the copy every later command is given.
func initStack(t *testing.T, root, name, stackFile string, init func() error) {
	t.Helper()
	repoFile := filepath.Join(root, "Pulumi."+name+".yaml")
	orig, err := os.ReadFile(repoFile)
	if err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if b, err := os.ReadFile(repoFile); err != nil || string(b) != string(orig) {
			if err := os.WriteFile(repoFile, orig, 0o644); err != nil {
				t.Errorf("restore %s: %v", repoFile, err)
			}
		}
	}
	t.Cleanup(restore)
	if err := init(); err != nil {
		restore()
		t.Fatalf("stack init %s: %v", name, err)
	}
	after, err := os.ReadFile(repoFile)
	if err != nil {
		t.Fatal(err)
	}
	restore()
	var added []string
	for _, l := range strings.Split(string(after), "\n") {
		if l != "" && !strings.Contains(string(orig), l) {
			added = append(added, l)
		}
	}
	f, err := os.OpenFile(stackFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(added) > 0 {
		if _, err := f.WriteString("\n" + strings.Join(added, "\n") + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

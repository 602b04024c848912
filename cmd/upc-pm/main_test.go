package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// TestBinary runs the real upc-pm binary as a process: unseal, write, SIGTERM,
// restart on the same data directory, wrong key, right key. Its logs must
// carry neither the key nor the data.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "upc-pm")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data := t.TempDir()
	const key, secretValue = "binary-test-key-9e1f", "binary-test-value-77aa"
	owner := access.NewToken(access.PrefixInstance)
	ctx := context.Background()
	// TLS as the router sets it up; the test's client trusts the CA.
	ca := certstest.New(t)
	hc := ca.Client(30 * time.Second)
	var tlsEnv []string
	for k, v := range ca.InstanceEnv("0123456789ab") {
		tlsEnv = append(tlsEnv, k+"="+v)
	}

	scanDone := map[*exec.Cmd]chan struct{}{}
	run := func() (*exec.Cmd, *pmclient.Client, *strings.Builder) {
		cmd := exec.Command(bin)
		cmd.Env = []string{"UPC_PM_ADDR=127.0.0.1:0", "UPC_PM_DATA=" + data, "UPC_PM_BUDGET=2.5", "UPC_PM_KDF_MEMORY_MIB=8",
			access.EnvSHA256 + "=" + access.Hash(owner)}
		cmd.Env = append(cmd.Env, tlsEnv...)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		logs := &strings.Builder{}
		addr := make(chan string, 1)
		done := make(chan struct{})
		scanDone[cmd] = done
		go func() {
			defer close(done)
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				logs.WriteString(sc.Text() + "\n")
				var l struct{ Msg, Addr string }
				if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
					addr <- l.Addr
				}
			}
			io.Copy(io.Discard, stderr)
		}()
		select {
		case a := <-addr:
			return cmd, pmclient.New("https://"+a, hc, pmclient.WithToken(owner)), logs
		case <-time.After(20 * time.Second):
			t.Fatalf("no listening line; logs:\n%s", logs)
		}
		return nil, nil, nil
	}
	stop := func(cmd *exec.Cmd) time.Duration {
		start := time.Now()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { <-scanDone[cmd]; done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("still running 10 s after SIGTERM")
		}
		return time.Since(start)
	}

	cmd, c, logs := run()
	if err := c.Healthz(ctx); err != nil {
		t.Fatal(err)
	}
	// Only the owner claims it.
	var se0 *pmclient.StatusError
	if err := pmclient.New(c.BaseURL(), hc).Unseal(ctx, "attacker"); !errors.As(err, &se0) || se0.Code != 401 {
		t.Fatalf("claim without the owner's secret: %v", err)
	}
	if err := c.Unseal(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Insert(ctx, api.DefaultDatabase, api.Timeseries, map[string]any{"metadata": map[string]any{"key": "background/location"}, "data": map[string]any{"v": secretValue}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.SpendBudget(ctx, 2.0); !ok || err != nil {
		t.Fatal(ok, err)
	}
	t.Logf("shutdown after SIGTERM took %v", stop(cmd))

	cmd, c, logs2 := run()
	var se *pmclient.StatusError
	if err := c.Unseal(ctx, "wrong"); !errors.As(err, &se) || se.Code != 403 {
		t.Fatalf("wrong key: %v", err)
	}
	if err := c.Unseal(ctx, key); err != nil {
		t.Fatal(err)
	}
	docs, err := c.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{"metadata.key": "background/location"}})
	if err != nil || len(docs) != 1 || docs[0]["data"].(map[string]any)["v"] != secretValue {
		t.Fatalf("after restart: %v %v", docs, err)
	}
	if ok, _ := c.SpendBudget(ctx, 1.0); ok {
		t.Error("budget was not persisted: 2.0 of 2.5 spent before the restart, 1.0 more allowed")
	}
	stop(cmd)
	for _, l := range []string{logs.String(), logs2.String()} {
		for _, s := range []string{key, secretValue, "background/location", owner} {
			if strings.Contains(l, s) {
				t.Errorf("logs contain %q:\n%s", s, l)
			}
		}
	}
}

// TestBinaryRefusesWithoutAccess: with neither the secret's hash nor the
// explicit legacy opt-in, upc-pm does not start.
func TestBinaryRefusesWithoutAccess(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "upc-pm")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, env := range [][]string{
		nil,
		{access.EnvLegacy + "=0"},
		{access.EnvSHA256 + "=nothex"},
	} {
		cmd := exec.Command(bin)
		env = append(env, certs.EnvPlain+"=1")
		cmd.Env = append([]string{"UPC_PM_ADDR=127.0.0.1:0", "UPC_PM_DATA=" + t.TempDir()}, env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("env %v: started (%v)\n%s", env, err, out)
			continue
		}
		if !strings.Contains(string(out), access.EnvSHA256) {
			t.Errorf("env %v: the refusal does not say what to set:\n%s", env, out)
		}
	}
	// With access but no certificate, and plain HTTP not chosen: no start.
	cmd := exec.Command(bin)
	cmd.Env = []string{"UPC_PM_ADDR=127.0.0.1:0", "UPC_PM_DATA=" + t.TempDir(), access.EnvSHA256 + "=" + access.Hash("x")}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no TLS certificate") {
		t.Errorf("no certificate: started or said something else (%v):\n%s", err, out)
	}
}

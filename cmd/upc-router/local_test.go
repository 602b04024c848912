package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/docker/testimage"
)

// syncBuffer is a bytes.Buffer safe for the router's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRouterBinaryLocalDocker runs the router as its binary would (config
// file, local engine, catalog file), on the real engine: the original
// endpoints launch and kill an instance, and a second router process started
// on the same machine adopts what the first one left.
func TestRouterBinaryLocalDocker(t *testing.T) {
	ctx := context.Background()
	cli, err := agent.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	var rb [4]byte
	rand.Read(rb[:])
	suffix := hex.EncodeToString(rb[:])
	ref := "upc-test/cmd-router:" + suffix
	id, err := testimage.Build(ctx, cli, ref)
	if err != nil {
		t.Fatal(err)
	}
	name, network := "t"+suffix, "upc-test-"+suffix
	t.Cleanup(func() {
		f := make(client.Filters).Add("label", agent.LabelAgent+"="+name)
		cs, _ := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		for _, c := range cs.Items {
			cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
		cli.NetworkRemove(ctx, network, client.NetworkRemoveOptions{})
		testimage.Remove(ctx, cli, ref)
	})

	dir := t.TempDir()
	catalog := fmt.Sprintf(`{"services": [{"name": "pm", "aliases": ["PM"], "image": %q, "digest": %q, "port": 8080, "health": "/healthz"}]}`, ref, id)
	os.WriteFile(filepath.Join(dir, "catalog.json"), []byte(catalog), 0o644)
	// The original scripts send no token: insecure_legacy lets them in; the
	// admin lists.
	const admin = "local-test-admin-token-0123456789abcdef"
	config := fmt.Sprintf("machines: {local: 1}\nnetwork: %s\ncatalog: catalog.json\n"+
		"router: {launch_timeout: 20s, insecure_legacy: true, admin_token_file: admin.token, users_file: users.json}\n", network)
	os.WriteFile(filepath.Join(dir, "upc.yaml"), []byte(config), 0o644)
	os.WriteFile(filepath.Join(dir, "admin.token"), []byte(admin+"\n"), 0o600)

	start := func() (string, context.CancelFunc, chan error) {
		rctx, cancel := context.WithCancel(ctx)
		logs := &syncBuffer{}
		done := make(chan error, 1)
		go func() {
			done <- run(rctx, []string{"--config", filepath.Join(dir, "upc.yaml"), "--listen", "127.0.0.1:0", "--name", name}, logs)
		}()
		re := regexp.MustCompile(`msg=listening .*addr=(\S+)`)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if m := re.FindStringSubmatch(logs.String()); m != nil {
				return "http://" + m[1], cancel, done
			}
			select {
			case err := <-done:
				t.Fatalf("router exited: %v\n%s", err, logs)
			case <-time.After(20 * time.Millisecond):
			}
		}
		t.Fatalf("router did not listen:\n%s", logs)
		return "", nil, nil
	}
	postJSON := func(url, body string) (int, string) {
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	base, stop, done := start()
	if code, body := postJSON(base+"/v1/instances", `{"service": "PM", "user": "x"}`); code != http.StatusUnauthorized {
		t.Fatalf("token-less v1 launch under insecure_legacy: %d %s, want 401", code, body)
	}
	code, body := postJSON(base+"/service_request", `{"service": "PM"}`)
	if code != 200 {
		t.Fatalf("service_request: %d %s", code, body)
	}
	var first struct{ Address string }
	json.Unmarshal([]byte(body), &first)
	code, body = postJSON(base+"/service_request", `{"service": "PM"}`)
	var second struct{ Address string }
	json.Unmarshal([]byte(body), &second)
	if code != 200 || second.Address == first.Address {
		t.Fatalf("second service_request: %d %s", code, body)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("router stopped with %v", err)
	}

	// A new router process adopts both instances from their labels.
	base, stop, done = start()
	defer func() { stop(); <-done }()
	if code, body := postJSON(base+"/kill", `{"address": "`+first.Address+`"}`); code != 200 {
		t.Fatalf("kill after restart: %d %s", code, body)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/instances", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Instances []struct{ Address, Digest string }
	}
	json.NewDecoder(resp.Body).Decode(&list)
	if len(list.Instances) != 1 || list.Instances[0].Address != second.Address || list.Instances[0].Digest != id {
		t.Fatalf("after restart and kill the router lists %+v, want only %s running %s", list.Instances, second.Address, id)
	}
}

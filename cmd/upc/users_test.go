package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/routerclient"
)

// noBackend runs nothing: `upc users` never launches.
type noBackend struct{}

func (noBackend) Launch(context.Context, router.Spec) (router.Instance, error) {
	return router.Instance{}, router.ErrNoMachine
}
func (noBackend) Pause(context.Context, router.ID) error          { return router.ErrNotFound }
func (noBackend) Resume(context.Context, router.ID) error         { return router.ErrNotFound }
func (noBackend) Destroy(context.Context, router.ID) error        { return router.ErrNotFound }
func (noBackend) List(context.Context) ([]router.Instance, error) { return nil, nil }

// TestUsersCommands drives `upc users add|list|remove` against an
// in-process router (no backend): the new token is printed once and works,
// list never shows tokens, remove revokes, and a non-admin is refused.
func TestUsersCommands(t *testing.T) {
	dir := t.TempDir()
	admin := strings.Repeat("b", 48)
	adminFile := filepath.Join(dir, "admin.token")
	os.WriteFile(adminFile, []byte(admin+"\n"), 0o600)
	users, err := router.OpenUsers(filepath.Join(dir, "users.json"), admin)
	if err != nil {
		t.Fatal(err)
	}
	core, err := router.New(router.Options{Backend: noBackend{}, PlainHTTP: true, Catalog: &conf.Catalog{Services: []conf.Service{
		{Name: "pm", Image: "x", Port: 8080, Health: "/healthz"}}}, Users: users})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(router.Handler(core, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	upc := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), append(args, "--router", srv.URL, "--token-file", adminFile), &out, &errb)
		return out.String(), errb.String(), err
	}

	out, msg, err := upc("users", "add", "alice")
	if err != nil || !strings.Contains(msg, "shown only now") {
		t.Fatalf("users add: %v %q", err, msg)
	}
	token := strings.TrimSpace(out)
	if !strings.HasPrefix(token, "upcu_") || strings.Count(out, "\n") != 1 {
		t.Fatalf("users add printed %q, want the token alone", out)
	}
	rc, _ := routerclient.New(srv.URL, routerclient.WithToken(token))
	if me, err := rc.Whoami(context.Background()); err != nil || me.Name != "alice" || me.Role != "user" {
		t.Fatalf("the printed token: whoami %+v %v", me, err)
	}
	if _, _, err := upc("users", "add", "rex", "--role", "researcher"); err != nil {
		t.Fatal(err)
	}
	// A monitor's token reads the router's metrics and nothing else.
	out, _, err = upc("users", "add", "prom", "--role", "monitor")
	if err != nil {
		t.Fatal(err)
	}
	mon, _ := routerclient.New(srv.URL, routerclient.WithToken(strings.TrimSpace(out)))
	if me, err := mon.Whoami(context.Background()); err != nil || me.Role != "monitor" {
		t.Fatalf("the monitor's token: whoami %+v %v", me, err)
	}
	if _, err := mon.List(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a monitor lists instances: %v, want 403", err)
	}
	out, _, err = upc("users", "list")
	if err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "researcher") || strings.Contains(out, "upcu_") {
		t.Fatalf("users list: %v\n%s", err, out)
	}
	if _, _, err := upc("users", "add", "alice"); err == nil || !strings.Contains(err.Error(), "409") && !strings.Contains(err.Error(), "exists") {
		t.Fatalf("adding alice twice: %v", err)
	}
	for _, bad := range [][]string{{"users", "add", "admin"}, {"users", "add", "legacy-7"}, {"users", "add", "x", "--role", "root"}} {
		if _, _, err := upc(bad...); err == nil {
			t.Errorf("upc %v succeeded", bad)
		}
	}
	if _, _, err := upc("users", "remove", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Whoami(context.Background()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a removed user's token: %v, want 401", err)
	}

	// A user's token is no admin's.
	bobFile := filepath.Join(dir, "bob.token")
	out, _, _ = upc("users", "add", "bob")
	os.WriteFile(bobFile, []byte(out), 0o600)
	var o, e bytes.Buffer
	err = run(context.Background(), []string{"users", "list", "--router", srv.URL, "--token-file", bobFile}, &o, &e)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("users list by a user: %v, want 403", err)
	}
	err = run(context.Background(), []string{"users", "list", "--router", srv.URL, "--token-file", filepath.Join(dir, "nope")}, &o, &e)
	if err == nil || !strings.Contains(err.Error(), "read router token") {
		t.Fatalf("missing token file: %v", err)
	}
}

package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/images"
)

// TestStartupErrors: bad flags and bad configuration stop the router before
// it serves, with a message naming the problem.
func TestStartupErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"extra argument", []string{"serve"}, `unexpected arguments ["serve"]`},
		{"missing config", []string{"--config", "testdata/nope.yaml"}, "read config"},
		{"unknown config field", []string{"--config", "testdata/invalid-unknown-field.yaml"}, "machnes"},
		{"kubernetes mode without a kubeconfig", []string{"--config", "testdata/invalid-kubernetes.yaml"}, "nope.kubeconfig"},
		{"bad catalog", []string{"--catalog", "testdata/invalid-catalog.json"}, "services[0].name"},
		{"missing manifest", []string{"--images", "testdata/nope.json"}, "nope.json"},
		{"bad publish ip", []string{"--publish-ip", "not-an-ip"}, "bind ip"},
		{"negative timeout", []string{"--launch-timeout", "-1s"}, "must not be negative"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
		{"no credential configured", []string{"--config", "testdata/invalid-no-access.yaml"}, "no one could call this router"},
		{"missing admin token file", []string{"--config", "testdata/invalid-admin-token-missing.yaml"}, "router.admin_token_file"},
		{"short admin token", []string{"--config", "testdata/invalid-admin-token-short.yaml"}, "admin token: want 32"},
		// Deny by default: a router that would speak plain HTTP anywhere.
		{"plain HTTP without insecure_legacy", []string{"--config", "testdata/invalid-plain.yaml"}, "refusing plain HTTP: service_router_use_tls is off"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), c.args, &stderr)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("run %q: %v, want an error containing %q", c.args, err, c.want)
			}
		})
	}
}

// --catalog FILE gives the catalog the config gives when it names FILE:
// entries that name no port listen on upc_port either way.
func TestCatalogFlagGivesTheConfigsCatalog(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	cfg, err := conf.Load("testdata/upc-port.yaml")
	if err != nil {
		t.Fatal(err)
	}
	viaConfig, err := loadCatalog(cfg, "", "", logger)
	if err != nil {
		t.Fatalf("catalog through the config: %v", err)
	}
	viaFlag, err := loadCatalog(cfg, "testdata/catalog-noport.yaml", "", logger)
	if err != nil {
		t.Fatalf("catalog through --catalog: %v", err)
	}
	if !reflect.DeepEqual(viaFlag, viaConfig) {
		t.Errorf("--catalog gives %+v, the config %+v", viaFlag, viaConfig)
	}
	if s, _ := viaFlag.Lookup("calendar"); s.Port != 9123 {
		t.Errorf("calendar port = %d, want upc_port 9123", s.Port)
	}
	// Without a config, an entry without a port listens on the default upc_port.
	def, err := loadCatalog(conf.Default(), "testdata/catalog-noport.yaml", "", logger)
	if err != nil {
		t.Fatalf("catalog through --catalog, default config: %v", err)
	}
	if s, _ := def.Lookup("calendar"); s.Port != conf.DefaultUPCPort {
		t.Errorf("calendar port = %d, want %d", s.Port, conf.DefaultUPCPort)
	}
}

// A catalog with no manifest to pin it says loudly, at start, that its
// images are not validated; pinned by one, it says nothing of the kind.
func TestUnpinnedCatalogWarns(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	if _, err := loadCatalog(conf.Default(), "", "", logger); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "IMAGES NOT VALIDATED") || !strings.Contains(logs.String(), "services=\"[pm pipeline metrics count]\"") {
		t.Errorf("no manifest, log:\n%s", logs.String())
	}
	logs.Reset()
	dir := t.TempDir()
	m := &images.Manifest{Version: "v1", Images: map[string]images.Image{}}
	for _, n := range []string{"pm", "pipeline", "metrics", "count"} {
		m.Images[n] = images.Image{Ref: "upc/" + n + ":v1", ID: "sha256:" + strings.Repeat("0", 64)}
	}
	if err := m.Save(filepath.Join(dir, "images.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCatalog(conf.Default(), "", filepath.Join(dir, "images.json"), logger); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "NOT VALIDATED") {
		t.Errorf("pinned, log:\n%s", logs.String())
	}
}

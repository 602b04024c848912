package auto

import (
	"context"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"

	"github.com/e-mission/upc/infra/stack"
)

func TestMergeConfigOverridesWin(t *testing.T) {
	file := map[string]string{"upc:namespace": "upc-infra", "upc:routerNodePort": "30430", "kubernetes:context": "kind"}
	got := MergeConfig(file, map[string]string{"namespace": "upc-it", "upc:routerNodePort": "30431", "images": "x.json"})
	want := map[string]string{"upc:namespace": "upc-it", "upc:routerNodePort": "30431", "upc:images": "x.json", "kubernetes:context": "kind"}
	if len(got) != len(want) {
		t.Errorf("merged %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k].Value != v {
			t.Errorf("%s = %q, want %q", k, got[k].Value, v)
		}
	}
}

func TestMergeConfigKeepsTheAdminTokenSecret(t *testing.T) {
	got := MergeConfig(map[string]string{"namespace": "upc"}, map[string]string{"adminToken": "upcu_x"})
	if v := got[AdminTokenKey]; v.Value != "upcu_x" || !v.Secret {
		t.Errorf("%s = %+v, want a secret", AdminTokenKey, v)
	}
	if got["upc:namespace"].Secret {
		t.Error("upc:namespace made a secret")
	}
}

func TestNeedsAdminToken(t *testing.T) {
	for _, tc := range []struct {
		settings auto.ConfigMap
		want     bool
	}{
		{auto.ConfigMap{}, true},
		{auto.ConfigMap{"upc:namespace": {Value: "upc"}}, true},
		{auto.ConfigMap{AdminTokenKey: {Value: " ", Secret: true}}, true},
		{auto.ConfigMap{AdminTokenKey: {Value: "upcu_kept", Secret: true}}, false},
	} {
		if got := NeedsAdminToken(tc.settings); got != tc.want {
			t.Errorf("NeedsAdminToken(%v) = %v, want %v", tc.settings, got, tc.want)
		}
	}
}

func TestMergeConfigKeepsTheCAKeySecret(t *testing.T) {
	got := MergeConfig(map[string]string{"caCert": "-----BEGIN CERTIFICATE-----"}, map[string]string{"caKey": "-----BEGIN PRIVATE KEY-----"})
	if v := got[CAKeyKey]; !v.Secret {
		t.Errorf("%s = %+v, want a secret", CAKeyKey, v)
	}
	if v := got[CACertKey]; v.Secret || v.Value == "" {
		t.Errorf("%s = %+v, want plain config", CACertKey, v)
	}
}

func TestNeedsCA(t *testing.T) {
	for _, tc := range []struct {
		settings auto.ConfigMap
		want     bool
	}{
		{auto.ConfigMap{}, true},
		{auto.ConfigMap{AdminTokenKey: {Value: "upcu_kept", Secret: true}}, true},
		{auto.ConfigMap{CACertKey: {Value: "\n"}, CAKeyKey: {Value: " ", Secret: true}}, true},
		// One half given: nothing is made (validation names the other).
		{auto.ConfigMap{CACertKey: {Value: "-----BEGIN CERTIFICATE-----"}}, false},
		{auto.ConfigMap{CAKeyKey: {Value: "-----BEGIN PRIVATE KEY-----", Secret: true}}, false},
		{auto.ConfigMap{CACertKey: {Value: "c"}, CAKeyKey: {Value: "k", Secret: true}}, false},
	} {
		if got := NeedsCA(tc.settings); got != tc.want {
			t.Errorf("NeedsCA(%v) = %v, want %v", tc.settings, got, tc.want)
		}
	}
}

// The CA made for a stack is one the program accepts, named after the stack.
func TestNewCAValidates(t *testing.T) {
	cert, key, err := NewCA("existing")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(CAName("existing"), "(existing)") {
		t.Errorf("CA name %q does not name the stack", CAName("existing"))
	}
	cfg := stack.Config{Target: stack.TargetKind, CACert: cert, CAKey: key}
	cfg.SetDefaults()
	err = cfg.Validate()
	if err != nil && (strings.Contains(err.Error(), "upc:caCert") || strings.Contains(err.Error(), "upc:caKey")) {
		t.Errorf("a new stack CA does not validate: %v", err)
	}
}

// --rotate-ca makes the CA: one given beside it is refused before anything
// is touched (no engine is looked for).
func TestRotateCARefusesAGivenCA(t *testing.T) {
	for _, k := range []string{"caCert", "upc:caKey"} {
		_, err := Stack(context.Background(), Options{ProjectDir: t.TempDir(), Stack: "kind", RotateCA: true, Config: map[string]string{k: "x"}})
		if err == nil || !strings.Contains(err.Error(), "--rotate-ca") || !strings.Contains(err.Error(), FullKey(k)) {
			t.Errorf("--rotate-ca with %s: %v", k, err)
		}
	}
}

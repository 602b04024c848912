package auto

import (
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
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

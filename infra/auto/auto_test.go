package auto

import "testing"

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

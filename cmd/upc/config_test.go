package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"config", "check"}, []string{"http://127.0.0.1:4430", "machine local", "service pm", "service count"}},
		{[]string{"config", "check", "../../conf/testdata/valid-three-machines.yaml"}, []string{"https://router.example.internal:4430", "machine 10.0.0.11", "weight 2", "https://10.0.0.11:54321", "machine 10.0.0.13:6000"}},
		{[]string{"config", "check", "../../conf/testdata/valid-original-names.json"}, []string{"mode kubernetes", "http://192.168.99.100:54321"}},
	} {
		var out bytes.Buffer
		if err := run(context.Background(), tc.args, &out, &bytes.Buffer{}); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v printed\n%s\nwant %q", tc.args, out.String(), w)
			}
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"config", "check", "--json", "../../conf/samples/one-machine.yaml"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["service_router_port"] != 4430.0 || m["delete_service_endpoint"] != "/kill" || m["services"] == nil {
		t.Errorf("--json printed %s", out.String())
	}
	// The sample's manifest path does not exist here: the check says so, as the router would.
	err := run(context.Background(), []string{"config", "check", "../../conf/samples/three-machines.yaml"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "/etc/upc/images.json") {
		t.Errorf("missing manifest: %v", err)
	}
	err = run(context.Background(), []string{"config", "check", "../../conf/testdata/invalid-many-problems.json"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "swarm_port: -1") || !strings.Contains(err.Error(), `upc_mode: "x"`) {
		t.Errorf("invalid config: %v", err)
	}
}

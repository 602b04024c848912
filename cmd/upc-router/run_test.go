package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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

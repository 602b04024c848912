package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestStartupErrors: bad flags and bad configuration stop the agent before
// it serves, with a message naming the problem.
func TestStartupErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"bad label", []string{"--label", "novalue"}, `"novalue" is not key=value`},
		{"missing config", []string{"--config", "testdata/nope.yaml"}, "read config"},
		{"bad publish ip", []string{"--publish-ip", "nowhere"}, "bind ip"},
		{"bad network", []string{"--network", "no spaces"}, "network"},
		{"bad name", []string{"--name", "Upper"}, "name"},
		{"unspecified bind without advertise", []string{"--publish-ip", "0.0.0.0", "--advertise", "gateway"}, "advertise: required"},
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

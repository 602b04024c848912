package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartupErrors: bad flags and bad configuration stop the agent before
// it serves, with a message naming the problem.
func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "agent.token")
	empty := filepath.Join(dir, "empty.token")
	blank := filepath.Join(dir, "blank.token")
	missing := filepath.Join(dir, "nope.token")
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("agent.token", "upca_0123456789abcdef0123456789abcdef0123456\n")
	write("empty.token", "")
	write("blank.token", " \n\t\n")
	// A config with agent.token_file but no agent.listen, one with a listen
	// address and a token file that is missing, one with both.
	noListen := write("no-listen.yaml", "agent:\n  token_file: agent.token\n")
	missingInConfig := write("missing-token.yaml", "agent:\n  listen: 127.0.0.1:0\n  token_file: nope.token\n")
	emptyInConfig := write("empty-token.yaml", "agent:\n  listen: 127.0.0.1:0\n  token_file: empty.token\n")
	noToken := write("no-token.yaml", "agent:\n  listen: 127.0.0.1:0\n")
	ok := []string{"--listen", "127.0.0.1:0", "--token-file", token}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"bad label", []string{"--label", "novalue"}, `"novalue" is not key=value`},
		{"missing config", []string{"--config", "testdata/nope.yaml"}, "read config"},
		// No listen address: refused whatever else is given.
		{"no listen", []string{"--token-file", token}, "no listen address: give --listen"},
		{"no listen in config", []string{"--config", noListen}, "no listen address"},
		// No token: refused, naming the file when there is one.
		{"no token", []string{"--listen", "127.0.0.1:0"}, "no token: give --token-file"},
		{"no token in config", []string{"--config", noToken}, "no token"},
		{"missing token file", []string{"--listen", "127.0.0.1:0", "--token-file", missing}, "--token-file: open " + missing},
		{"empty token file", []string{"--listen", "127.0.0.1:0", "--token-file", empty}, "--token-file: " + empty + " is empty"},
		{"blank token file", []string{"--listen", "127.0.0.1:0", "--token-file", blank}, blank + " is empty"},
		{"missing agent.token_file", []string{"--config", missingInConfig}, "agent.token_file: open " + missing},
		{"empty agent.token_file", []string{"--config", emptyInConfig}, "agent.token_file: " + empty + " is empty"},
		{"bad catalog", append([]string{"--catalog", "testdata/nope.json"}, ok...), "read catalog"},
		{"bad manifest", append([]string{"--images", "testdata/nope.json"}, ok...), "nope.json"},
		{"bad publish ip", append([]string{"--publish-ip", "nowhere"}, ok...), "bind ip"},
		{"bad network", append([]string{"--network", "no spaces"}, ok...), "network"},
		{"bad name", append([]string{"--name", "Upper"}, ok...), "name"},
		{"bad network mode", append([]string{"--network-mode", "hostnet"}, ok...), `--network-mode (docker.network_mode): "hostnet" is not one of bridge, host`},
		{"bad host ports", append([]string{"--network-mode", "host", "--host-ports", "9000"}, ok...), `--host-ports (docker.host_ports): "9000" is not LOW-HIGH`},
		{"unspecified bind without advertise", append([]string{"--publish-ip", "0.0.0.0", "--advertise", "gateway"}, ok...), "advertise: required"},
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

package main

import (
	"io"
	"testing"
)

// The root command holds every subcommand, each built afresh by its
// constructor: two roots share no command.
func TestRootHasEverySubcommand(t *testing.T) {
	a, b := newRootCmd(io.Discard, io.Discard), newRootCmd(io.Discard, io.Discard)
	for _, name := range []string{"aggregate", "client", "cluster", "config", "e2e", "images", "pipeline", "scenario", "synth", "users"} {
		ca, _, err := a.Find([]string{name})
		if err != nil || ca == a || ca.Name() != name {
			t.Errorf("upc %s: not a subcommand (%v)", name, err)
			continue
		}
		if cb, _, _ := b.Find([]string{name}); cb == ca {
			t.Errorf("upc %s: two roots share the command", name)
		}
	}
}

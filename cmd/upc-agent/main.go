// Command upc-agent is UPC's machine agent (the original swarm.py): an HTTP
// server driving this machine's Docker Engine for the service router.
//
//	upc-agent [--config upc.yaml] [--listen :54321] [--advertise gateway|HOST]
//	          [--publish-ip gateway|IP] [--network upc] [--name NAME] [--label k=v]...
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "upc-agent:", err)
		os.Exit(1)
	}
}

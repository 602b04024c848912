// Command upc-agent is UPC's machine agent (the original swarm.py): an HTTP
// server driving this machine's Docker Engine for the service router.
//
//	upc-agent --listen HOST:PORT --token-file FILE [--config upc.yaml]
//	          [--catalog FILE] [--images build/images.json]
//	          [--advertise gateway|HOST] [--publish-ip gateway|IP]
//	          [--network upc] [--name NAME] [--label k=v]...
//
// It refuses to start without a listen address (--listen or agent.listen:
// there is no default) and without the token it shares with its router
// (--token-file or agent.token_file). It answers only callers bearing that
// token and launches only the catalog's images.
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

// Command upc-router is UPC's service router: the versioned API and the
// original endpoints, over the Docker backend (the local engine, or one
// machine agent per configured machine).
//
//	upc-router [--config upc.yaml] [--listen :4430] [--catalog catalog.json]
//	           [--images build/images.json] [--advertise gateway|HOST] [--publish-ip gateway|IP]
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
		fmt.Fprintln(os.Stderr, "upc-router:", err)
		os.Exit(1)
	}
}

// Command upc-pm is the permission manager of a user's private cloud: it
// holds the user's data encrypted at rest, unsealed by their key, and their
// privacy budget.
//
// Configuration (flags override the environment):
//
//	UPC_PM_ADDR    listen address (default :8080)
//	UPC_PM_DATA    data directory, the only place it writes (default /data)
//	UPC_PM_BUDGET  a new volume's privacy budget (default 1.0)
//	UPC_PM_KDF_MEMORY_MIB, UPC_PM_KDF_TIME  Argon2id costs for a new volume
//	UPC_PM_MAX_BODY_MIB  request body limit (default 64)
//	UPC_PM_BUDGET_RENEW  reset the budget every this long (e.g. 720h; 0: never)
//	UPC_PM_NOSYNC  "true" skips fsync (throwaway clouds, benchmarks)
//	UPC_ACCESS_SHA256  hex SHA-256 of the owner's instance secret (set by the router)
//	UPC_INSECURE_LEGACY  "1": no access control at all (the original scripts)
//	UPC_POOLED  "1": a warm-pool PM with no owner yet; only the router's client
//	            certificate gives it one, once (POST /v1/provision); needs TLS
//	GOGC, GOMEMLIMIT  unless set: 25 (more while the heap is small: it may always
//	                  grow by 8 MiB), and 3/4 of the container's memory limit
//
// Without UPC_ACCESS_SHA256, UPC_POOLED=1 or UPC_INSECURE_LEGACY=1 it
// refuses to start.
//
// "upc-pm own-data UID:GID DIR..." gives DIR and what it holds to UID:GID and
// exits: a backend runs it as root with only CAP_CHOWN, before the PM, where
// a volume may hold files of root's (see internal/owndata). "upc-pm wipe-data
// DIR..." removes everything under each DIR and exits: the Kubernetes backend
// runs it, as the PM's user, to erase a user's claim on a node's disk.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/e-mission/upc/internal/gctune"
	"github.com/e-mission/upc/internal/owndata"
	"github.com/e-mission/upc/services/pm"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == owndata.Command || os.Args[1] == owndata.WipeCommand) {
		sub := owndata.Main
		if os.Args[1] == owndata.WipeCommand {
			sub = owndata.WipeMain
		}
		if err := sub(os.Args[2:], func(s string) { fmt.Fprintln(os.Stderr, s) }); err != nil {
			fmt.Fprintln(os.Stderr, "upc-pm:", err)
			os.Exit(1)
		}
		return
	}
	// 25% of a year's index (about 40 MiB) is what keeps the PM in its memory.
	gctune.Tune(os.Getenv, gctune.ReadMemoryMax(), gctune.Settings{MinPercent: 25, Headroom: 8 << 20})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := pm.Main(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "upc-pm:", err)
		os.Exit(1)
	}
}

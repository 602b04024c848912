package pm

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/e-mission/upc/internal/atomicfile"
)

// ClaimFile is where, in the data directory, a PM keeps the mark that its
// owner has used this instance's secret.
const ClaimFile = "claimed"

// claim records that the owner has made a request with this instance's
// secret. GET /healthz reports it: a PM whose secret nobody ever used (a
// launch the router did not finish, or whose answer never reached its
// caller) is one the router may replace when its user launches again, since
// no one can call it. The mark holds the secret's hash, so a relaunch on the
// same volume (a new secret) starts unclaimed, and it survives a restart of
// this instance (SIGKILL, a pod's container restart).
type claim struct {
	done atomic.Bool
	mu   sync.Mutex
	path string // "" keeps the mark in memory only
	hash string
	log  *slog.Logger
}

// loadClaim reads the mark at path for the secret hashed to hash.
func loadClaim(path, hash string, log *slog.Logger) *claim {
	c := &claim{path: path, hash: hash, log: log}
	if path != "" && hash != "" {
		if b, err := os.ReadFile(path); err == nil && string(bytes.TrimSpace(b)) == hash {
			c.done.Store(true)
		}
	}
	return c
}

// mark records the claim once. A mark that cannot be written is logged:
// the claim holds in memory, and only a restart would forget it.
func (c *claim) mark() {
	if c.done.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done.Load() {
		return
	}
	if c.path != "" {
		if err := atomicfile.Write(c.path, []byte(c.hash+"\n"), 0o600); err != nil {
			c.log.Warn("claim mark not kept (a restart of this instance will report it unclaimed)", "err", err.Error())
		}
	}
	c.done.Store(true)
}

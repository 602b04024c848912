package pm

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/version"
	"github.com/e-mission/upc/services/pm/store"
)

// Config is the service's configuration.
type Config struct {
	Addr       string
	DataDir    string
	Budget     float64
	KDF        store.KDFParams
	MaxBodyMiB int64
	NoSync     bool
	RenewEvery time.Duration // 0: the budget never renews
	// QueryTimeout stops a data request that runs longer.
	QueryTimeout time.Duration
}

// ParseConfig reads flags over environment variables, returning every
// problem at once.
func ParseConfig(args []string, getenv func(string) string) (Config, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	var errs []error
	num := func(k, def string) float64 {
		f, err := strconv.ParseFloat(env(k, def), 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a number", k, env(k, def)))
		}
		return f
	}
	c := Config{KDF: store.DefaultKDF}
	fs := flag.NewFlagSet("upc-pm", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Addr, "addr", access.ListenAddr(getenv, "UPC_PM_ADDR", ":8080"), "listen address (UPC_LISTEN, else UPC_PM_ADDR)")
	fs.StringVar(&c.DataDir, "data", env("UPC_PM_DATA", "/data"), "data directory (UPC_PM_DATA)")
	fs.Float64Var(&c.Budget, "budget", num("UPC_PM_BUDGET", "1.0"), "initial privacy budget of a new volume (UPC_PM_BUDGET)")
	mem := fs.Int64("kdf-memory-mib", int64(num("UPC_PM_KDF_MEMORY_MIB", strconv.Itoa(int(store.DefaultKDF.MemoryKiB/1024)))), "Argon2id memory for a new volume, MiB")
	tm := fs.Int64("kdf-time", int64(num("UPC_PM_KDF_TIME", strconv.Itoa(int(store.DefaultKDF.Time)))), "Argon2id passes for a new volume")
	fs.Int64Var(&c.MaxBodyMiB, "max-body-mib", int64(num("UPC_PM_MAX_BODY_MIB", "64")), "request body limit, MiB")
	renew := env("UPC_PM_BUDGET_RENEW", "0s")
	fs.StringVar(&renew, "budget-renew", renew, "renew the budget to its initial value every this long, e.g. 720h; 0 never (UPC_PM_BUDGET_RENEW)")
	qt := env("UPC_PM_QUERY_TIMEOUT", DefaultQueryTimeout.String())
	fs.StringVar(&qt, "query-timeout", qt, "stop a data request that runs longer, e.g. 2m (UPC_PM_QUERY_TIMEOUT)")
	fs.BoolVar(&c.NoSync, "nosync", env("UPC_PM_NOSYNC", "false") == "true", "skip fsync (UPC_PM_NOSYNC=true)")
	if err := fs.Parse(args); err != nil {
		errs = append(errs, err)
	}
	if d, err := time.ParseDuration(renew); err != nil || d < 0 {
		errs = append(errs, fmt.Errorf("budget renewal %q must be a duration ≥ 0 such as 720h", renew))
	} else {
		c.RenewEvery = d
	}
	if d, err := time.ParseDuration(qt); err != nil || d <= 0 {
		errs = append(errs, fmt.Errorf("query timeout %q must be a duration > 0 such as 2m", qt))
	} else {
		c.QueryTimeout = d
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if c.Budget < 0 {
		errs = append(errs, fmt.Errorf("budget must be ≥ 0, not %v", c.Budget))
	}
	if c.MaxBodyMiB < 1 {
		errs = append(errs, fmt.Errorf("max body must be at least 1 MiB"))
	}
	if c.DataDir == "" {
		errs = append(errs, fmt.Errorf("data directory is empty"))
	}
	c.KDF.MemoryKiB = uint32(*mem * 1024)
	c.KDF.Time = uint32(*tm)
	return c, errors.Join(errs...)
}

// Main runs the service until ctx is done.
func Main(ctx context.Context, args []string, getenv func(string) string, logOut io.Writer) error {
	cfg, err := ParseConfig(args, getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	acc, err := access.FromEnv(getenv)
	if err != nil {
		return fmt.Errorf("access: %w", err)
	}
	logger := slog.New(slog.NewJSONHandler(logOut, nil)).With("service", "pm")
	tlsrv, err := certs.ServingFromEnv(getenv, acc.Legacy)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if acc.Pooled && tlsrv == nil {
		return fmt.Errorf("tls: %s=1 needs a certificate: only the router's client certificate may provision a warm-pool PM", access.EnvPooled)
	}
	if acc.Legacy {
		logger.Warn("running with no access control (" + access.EnvLegacy + "=1): anyone who reaches this PM may claim, read and spend it")
	}
	st, err := store.Open(cfg.DataDir, store.Options{KDF: cfg.KDF, InitialBudget: cfg.Budget, NoSync: cfg.NoSync, RenewEvery: cfg.RenewEvery})
	if err != nil {
		return err
	}
	defer st.Close()
	logger.Info("starting", "version", version.Version, "data", cfg.DataDir, "initialized", st.Initialized(), "pooled", acc.Pooled)
	srv := New(st, logger, Options{MaxBody: cfg.MaxBodyMiB << 20, Access: acc, QueryTimeout: cfg.QueryTimeout,
		ClaimFile: filepath.Join(cfg.DataDir, ClaimFile)})
	h, requests := countRequests(srv.Handler())
	go trimWhenIdle(ctx, requests, 5*time.Second)
	err = tlsrv.ListenAndServe(ctx, logger, cfg.Addr, h)
	logger.Info("stopped")
	return err
}

// countRequests counts the requests h serves.
func countRequests(h http.Handler) (http.Handler, *atomic.Uint64) {
	var n atomic.Uint64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	}), &n
}

// trimWhenIdle hands freed memory back to the OS once the PM has been idle
// for a period after serving requests: an unseal (Argon2id's 46 MiB) or a
// large upload would otherwise keep the process's resident size high for
// minutes, and a machine runs many idle PMs.
func trimWhenIdle(ctx context.Context, requests *atomic.Uint64, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	last, dirty := requests.Load(), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := requests.Load()
		switch {
		case n != last:
			last, dirty = n, true
		case dirty:
			debug.FreeOSMemory()
			dirty = false
		}
	}
}

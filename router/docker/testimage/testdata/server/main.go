// Command server is the router tests' instance: a tiny HTTP service built
// FROM scratch. It answers /healthz (503 forever when UPC_TEST_NEVER_HEALTHY
// is set), / with its hostname, /fetch?url= with what it got from url (to
// check one instance can call another's address), and /write, /read on a
// file under /data (to check per-user volumes outlive containers), and
// /probe with its uid, gid and which of /data, /tmp and / it can write;
// "server own-data UID:GID DIR" and "server wipe-data DIR" are upc-pm's
// (internal/owndata). Given a
// certificate by its router (UPC_TLS_CERT, ...), it serves TLS and fetches
// over TLS only, as UPC's services do; without one it serves plain HTTP.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/owndata"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == owndata.Command || os.Args[1] == owndata.WipeCommand) { // as upc-pm
		sub := owndata.Main
		if os.Args[1] == owndata.WipeCommand {
			sub = owndata.WipeMain
		}
		if err := sub(os.Args[2:], func(s string) { fmt.Fprintln(os.Stderr, s) }); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	tlsrv, err := certs.ServingFromEnv(os.Getenv, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	never := os.Getenv("UPC_TEST_NEVER_HEALTHY") != ""
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if never {
			http.Error(w, "never healthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"hostname": host, "user": os.Getenv("UPC_TEST_USER")})
	})
	client := tlsrv.Client(5 * time.Second)
	mux.HandleFunc("GET /fetch", func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get(r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
	mux.HandleFunc("GET /probe", func(w http.ResponseWriter, r *http.Request) {
		writable := map[string]bool{}
		for _, dir := range []string{"/data", "/tmp", "/"} {
			writable[dir] = os.WriteFile(filepath.Join(dir, ".probe"), []byte("x"), 0o600) == nil
		}
		json.NewEncoder(w).Encode(map[string]any{"uid": os.Getuid(), "gid": os.Getgid(), "writable": writable})
	})
	mux.HandleFunc("POST /write", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err := os.WriteFile("/data/note", b, 0o600); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("GET /read", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile("/data/note")
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := tlsrv.ListenAndServe(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)), access.ListenAddr(os.Getenv, "", ":8080"), mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Command hello is the smallest service an image test can run: it answers
// GET / with its linked version, and GET /probe with its user and which of
// /data, /tmp and / it can write (the image's non-root user and its dirs).
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"

	"github.com/e-mission/upc/internal/version"
)

func main() {
	http.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", version.Version)
	})
	http.HandleFunc("GET /probe", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "uid=%d gid=%d", os.Getuid(), os.Getgid())
		for _, dir := range []string{"/data", "/tmp", "/"} {
			err := os.WriteFile(filepath.Join(dir, "probe"), []byte("x"), 0o600)
			fmt.Fprintf(w, " %s=%t", dir, err == nil)
		}
		fmt.Fprintln(w)
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}

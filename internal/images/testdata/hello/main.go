// Command hello is the smallest service an image test can run: it answers
// GET / with its linked version.
package main

import (
	"fmt"
	"log"
	"net/http"

	"github.com/e-mission/upc/internal/version"
)

func main() {
	http.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", version.Version)
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}

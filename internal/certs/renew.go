package certs

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"slices"
)

// RenewPath is where an instance takes a renewed certificate from its
// router (PUT, a Renewal, over TLS with the router's client certificate).
const RenewPath = "/v1/tls/certificate"

// Renewal is the body of a PUT to RenewPath.
type Renewal struct {
	Cert string `json:"cert"` // PEM chain
	Key  string `json:"key"`  // PEM key
}

// WithRenewal serves RenewPath in front of next: only a caller presenting
// the router's client certificate (RouterName, from the instance's CAs) may
// replace the certificate, and only with one for the same instance name.
// Everything else goes to next.
func (s *Serving) WithRenewal(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != RenewPath {
			next.ServeHTTP(w, r)
			return
		}
		fail := func(code int, format string, a ...any) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(format, a...)})
		}
		if r.Method != http.MethodPut {
			w.Header().Set("Allow", http.MethodPut)
			fail(http.StatusMethodNotAllowed, "method %s not allowed: PUT a renewal", r.Method)
			return
		}
		if !ClientNamed(r, RouterName) {
			fail(http.StatusForbidden, "only the router renews an instance's certificate (a client certificate naming %s)", RouterName)
			return
		}
		var body Renewal
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil {
			fail(http.StatusBadRequest, "renewal body: %v", err)
			return
		}
		blk, _ := pem.Decode([]byte(body.Cert))
		if blk == nil {
			fail(http.StatusBadRequest, "renewal: cert is not PEM")
			return
		}
		leaf, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			fail(http.StatusBadRequest, "renewal: %v", err)
			return
		}
		if err := VerifyInstance(s.Roots, []*x509.Certificate{leaf}); err != nil {
			fail(http.StatusBadRequest, "renewal: %v", err)
			return
		}
		if !slices.Equal(leaf.DNSNames, s.Keypair.Leaf().DNSNames) {
			fail(http.StatusBadRequest, "renewal is for %v, this instance is %v", leaf.DNSNames, s.Keypair.Leaf().DNSNames)
			return
		}
		if err := s.Keypair.Set([]byte(body.Cert), []byte(body.Key)); err != nil {
			fail(http.StatusBadRequest, "renewal: %v", err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

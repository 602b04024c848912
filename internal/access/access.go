// Package access holds UPC's credentials: random bearer tokens, the SHA-256
// hashes that are all a server keeps of them, and the guard every instance
// (PM and services) puts in front of its handler. Who may call what is
// written down in docs/security.md.
package access

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/httpx"
)

// Token prefixes say what a credential is, so a leaked one is recognisable
// (and a secret scanner can find it).
const (
	PrefixUser     = "upcu_" // a router user (user, researcher or admin)
	PrefixInstance = "upcs_" // one instance's secret, handed to its launcher
	PrefixGrant    = "upcg_" // a grant signed by one PM
	PrefixAgent    = "upca_" // shared by a router and its machine agents
)

// Environment an instance reads at start, set by the router.
const (
	// EnvSHA256 is the hex SHA-256 of the instance's secret: the instance
	// answers only requests bearing that secret (or, at a PM, its grants).
	EnvSHA256 = "UPC_ACCESS_SHA256"
	// EnvLegacy = "1" runs the instance with no access control, for the
	// original scripts (router insecure_legacy).
	EnvLegacy = "UPC_INSECURE_LEGACY"
	// EnvPMAddress and EnvPMGrant bind a per-user service to one PM.
	EnvPMAddress = "UPC_PM_ADDRESS"
	EnvPMGrant   = "UPC_PM_GRANT"
	// EnvListen is the address an instance serves on, set by a Docker agent
	// in host network mode (the port it allocated); it wins over the
	// service's own UPC_<SERVICE>_ADDR.
	EnvListen = "UPC_LISTEN"
)

// ListenAddr is where an instance serves: EnvListen, else its own
// variable own, else def.
func ListenAddr(getenv func(string) string, own, def string) string {
	for _, k := range []string{EnvListen, own} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
	}
	return def
}

// NewToken returns prefix followed by 256 random bits, base64url.
func NewToken(prefix string) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("access: no randomness: " + err.Error()) // crypto/rand never fails on supported platforms
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// Hash is the hex SHA-256 of token: what servers store and compare. Tokens
// carry 256 random bits, so a plain hash (no salt, no stretching) suffices.
func Hash(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// ValidHash reports whether h looks like a Hash.
func ValidHash(h string) bool {
	if len(h) != sha256.Size*2 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// Match reports, in constant time, whether token hashes to hash.
func Match(token, hash string) bool {
	if token == "" || hash == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(Hash(token)), []byte(strings.ToLower(hash))) == 1
}

// Bearer is the request's "Authorization: Bearer" token, if any.
func Bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	tok = strings.TrimSpace(tok)
	return tok, ok && tok != ""
}

// Health is what an instance's GET /healthz answers. Claimed, where an
// instance reports it, says whether its owner has ever used its secret: the
// router replaces an unclaimed PM when its user launches again (the secret
// of a launch it did not finish reached no one). IdleSeconds, where
// reported, is how long since the instance last served an authenticated
// request (or started): the router's idle policy pauses and deletes
// instances by it.
type Health struct {
	Status      string `json:"status"`
	Claimed     *bool  `json:"claimed,omitempty"`
	IdleSeconds *int64 `json:"idle_seconds,omitempty"`
}

// ForCaller is what h may say to the caller of r: everything to the router
// (a client certificate naming certs.RouterName) and over plain HTTP (the
// original scripts' opt-in, where no one can prove who they are); to anyone
// else over TLS, the status alone: whether an owner has claimed a PM, and
// when a user last used an instance, are the router's to know.
func (h Health) ForCaller(r *http.Request) Health {
	if r.TLS == nil || certs.ClientNamed(r, certs.RouterName) {
		return h
	}
	return Health{Status: h.Status}
}

// Instance is an instance's access settings, read from its environment.
type Instance struct {
	SHA256    string // hash of the instance secret
	Legacy    bool   // no access control (explicit opt-in)
	PMAddress string // bound PM (services only)
	PMGrant   string // grant at the bound PM
	// Pooled: a warm-pool PM, with no owner (no SHA256) until the router
	// provisions it (ProvisionPath).
	Pooled bool
}

// ErrNoAccess is returned by FromEnv when an instance was given neither a
// secret's hash nor the explicit legacy opt-in: it must not start.
var ErrNoAccess = errors.New("no access control configured: set " + EnvSHA256 + " (the router does) or " + EnvLegacy + "=1 to run without any")

// FromEnv reads an instance's settings; getenv is os.Getenv in binaries.
func FromEnv(getenv func(string) string) (Instance, error) {
	in := Instance{
		SHA256:    strings.TrimSpace(getenv(EnvSHA256)),
		PMAddress: strings.TrimSpace(getenv(EnvPMAddress)),
		PMGrant:   strings.TrimSpace(getenv(EnvPMGrant)),
	}
	switch v := strings.TrimSpace(getenv(EnvLegacy)); v {
	case "", "0", "false":
	case "1", "true":
		in.Legacy = true
	default:
		return Instance{}, fmt.Errorf("%s=%q: want 1 or 0", EnvLegacy, v)
	}
	switch v := strings.TrimSpace(getenv(EnvPooled)); v {
	case "", "0", "false":
	case "1", "true":
		in.Pooled = true
	default:
		return Instance{}, fmt.Errorf("%s=%q: want 1 or 0", EnvPooled, v)
	}
	if in.Pooled {
		// Its owner comes later, from the router alone.
		if in.SHA256 != "" || in.Legacy || in.PMAddress != "" || in.PMGrant != "" {
			return Instance{}, fmt.Errorf("%s=1 starts with no owner: it goes with none of %s, %s, %s, %s", EnvPooled, EnvSHA256, EnvLegacy, EnvPMAddress, EnvPMGrant)
		}
		return in, nil
	}
	if in.SHA256 != "" && !ValidHash(in.SHA256) {
		return Instance{}, fmt.Errorf("%s: want 64 hex digits (a SHA-256), got %d characters", EnvSHA256, len(in.SHA256))
	}
	if in.SHA256 == "" && !in.Legacy {
		return Instance{}, ErrNoAccess
	}
	if (in.PMAddress == "") != (in.PMGrant == "") {
		return Instance{}, fmt.Errorf("%s and %s go together: a bound service needs both", EnvPMAddress, EnvPMGrant)
	}
	return in, nil
}

// Paths outside the credential check, and the one a monitor may read.
const (
	HealthzPath = "/healthz" // open: {"status":"ok"}
	ReadyzPath  = "/readyz"  // open: ready or not, and nothing else
	MetricsPath = "/metrics" // the instance's own credential, or a monitor's certificate
)

// Open reports whether r asks for what anyone may: GET (or HEAD) /healthz
// or /readyz, which answer a state and reveal nothing of anyone.
func Open(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && (r.URL.Path == HealthzPath || r.URL.Path == ReadyzPath)
}

// Monitor reports whether r is a scrape of MetricsPath (GET or HEAD) over
// TLS with a verified client certificate of the server's CAs naming
// certs.MonitorName (an operator's scraper) or certs.RouterName: those may
// read an instance's or an agent's metrics, and nothing else.
func Monitor(r *http.Request) bool {
	if r.URL.Path != MetricsPath || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	return certs.ClientNamed(r, certs.MonitorName) || certs.ClientNamed(r, certs.RouterName)
}

// Guard wraps h so that every request but GET /healthz and GET /readyz
// bears the secret whose hash is in.SHA256 (or, for GET /metrics alone, a
// monitor's client certificate: see Monitor): no credential answers 401, a
// wrong one 403, and both are logged with the caller's address. Legacy lets
// everything through.
func Guard(in Instance, logger *slog.Logger, h http.Handler) http.Handler {
	if in.Legacy {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == HealthzPath || Open(r) || Monitor(r) {
			h.ServeHTTP(w, r)
			return
		}
		tok, ok := Bearer(r)
		var err error
		switch {
		case !ok:
			err = httpx.Errorf(http.StatusUnauthorized, "this instance answers only its launcher: send Authorization: Bearer <instance secret>")
		case !Match(tok, in.SHA256):
			err = httpx.Errorf(http.StatusForbidden, "wrong credential for this instance")
		}
		if err != nil {
			logger.Warn("refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err.Error())
			httpx.Handle(logger, func(http.ResponseWriter, *http.Request) error { return err }).ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

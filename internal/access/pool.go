package access

import (
	"fmt"
	"regexp"
)

// The warm pool: a PM started before anyone asks for it (EnvPooled=1)
// has no owner. It answers nothing but its open paths until the router,
// over TLS with its own client certificate (certs.RouterName), provisions
// it once with a user and the hash of the secret it hands that user's
// launch: from then on it is that user's PM like any other, sealed until
// their key.
const (
	// EnvPooled = "1" starts a PM in the warm pool: no owner yet.
	EnvPooled = "UPC_POOLED"
	// ProvisionPath is where the router provisions a pooled PM (POST a
	// Provision). Only the router's client certificate may, once.
	ProvisionPath = "/v1/provision"
)

// Provision is the body of a POST to ProvisionPath.
type Provision struct {
	User   string `json:"user"`
	SHA256 string `json:"access_sha256"` // the hash of the owner's instance secret
}

var provisionUserRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Validate reports what is wrong with p.
func (p Provision) Validate() error {
	if !provisionUserRE.MatchString(p.User) {
		return fmt.Errorf("user %q must be 1-63 letters, digits, '_', '.' or '-'", p.User)
	}
	if !ValidHash(p.SHA256) {
		return fmt.Errorf("access_sha256: want 64 hex digits (a SHA-256), got %d characters", len(p.SHA256))
	}
	return nil
}

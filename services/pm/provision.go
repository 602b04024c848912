package pm

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/httpx"
)

// owner is the PM's owner: the hash of their instance secret, their user
// name where the router provisioned it, and the claim mark of that secret.
type owner struct {
	sha256, user string
	claim        *claim
}

// provision makes a warm-pool PM its user's (access.ProvisionPath): only
// the router, over TLS with its own client certificate, and only once. A
// PM started with an owner is never provisioned.
func (s *Server) provision(w http.ResponseWriter, r *http.Request) error {
	if !certs.ClientNamed(r, certs.RouterName) {
		return deny(http.StatusForbidden, "only the router provisions a warm-pool PM (a client certificate naming %s)", certs.RouterName)
	}
	if !s.access.Pooled {
		return &httpx.Error{Code: http.StatusConflict, Msg: "this PM is not in the warm pool: its owner was fixed at its start"}
	}
	var p access.Provision
	if err := httpx.Decode(w, r, &p, httpx.DecodeOptions{MaxBody: 4 << 10}); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return &httpx.Error{Code: http.StatusBadRequest, Msg: "provision: " + err.Error(), Err: err}
	}
	cur := s.owner.Load()
	if cur.sha256 != "" {
		return &httpx.Error{Code: http.StatusConflict, Msg: fmt.Sprintf("this PM was provisioned already (for %s): a pool PM serves one user, once", cur.user),
			Err: errors.New("second provision")}
	}
	// The claim mark is for this secret: a mark of an earlier one (there
	// is none on a pool volume) would not count.
	next := &owner{sha256: p.SHA256, user: p.User, claim: loadClaim(s.claimFile, p.SHA256, s.log)}
	if !s.owner.CompareAndSwap(cur, next) {
		return &httpx.Error{Code: http.StatusConflict, Msg: "this PM was provisioned already: a pool PM serves one user, once"}
	}
	s.log.Info("provisioned from the warm pool", "user", p.User)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

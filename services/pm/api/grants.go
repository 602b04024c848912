package api

import "time"

// Grant endpoints. Only the PM's owner (the bearer of the instance secret the
// router handed to the launching user) issues, lists and revokes grants; a
// grant's bearer may check it.
const (
	PathGrants     = "/v1/grants"       // POST: issue (owner); GET: list (owner)
	PathGrant      = "/v1/grants/{id}"  // DELETE: revoke (owner)
	PathGrantCheck = "/v1/grants/check" // POST: the bearer's grant, if valid
)

// Wildcard in Read or Write allows every stream (metadata.key).
const Wildcard = "*"

// GrantRequest asks the owner's PM for a grant. A grant lets a service do
// what it says and nothing more: read documents of the Read streams
// (metadata.key values), write documents of the Write streams, and spend at
// most Spend ε in all, until it expires or the owner revokes it.
type GrantRequest struct {
	Service string   `json:"service"`         // "pipeline", "count", "metrics" (who it is for; logged in the ledger)
	Read    []string `json:"read,omitempty"`  // streams it may read; ["*"] for all
	Write   []string `json:"write,omitempty"` // streams it may insert, update or delete; ["*"] for all
	Spend   float64  `json:"spend,omitempty"` // total ε it may charge; 0: none
	// TTL is how long it lasts, as a Go duration ("1h"); empty means 1h, at
	// most 720h.
	TTL string `json:"ttl,omitempty"`
}

// Grant is an issued grant. Token (upcg_...) is its bearer credential and is
// sent once, in the answer to POST /v1/grants; the PM keeps only its hash.
type Grant struct {
	ID      string    `json:"id"`
	Service string    `json:"service"`
	Read    []string  `json:"read,omitempty"`
	Write   []string  `json:"write,omitempty"`
	Spend   float64   `json:"spend"`
	Spent   float64   `json:"spent"` // charged under this grant so far
	Expires time.Time `json:"expires"`
	Revoked bool      `json:"revoked,omitempty"`
	Token   string    `json:"token,omitempty"`
}

// GrantList answers GET /v1/grants.
type GrantList struct {
	Grants []Grant `json:"grants"`
}

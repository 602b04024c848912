// Package api holds the router's wire types, shared by the server (package
// router) and the typed client (package routerclient).
package api

import "time"

// LaunchRequest asks for a new instance of a catalog service for a user.
// A user launches for themselves (User may be left empty); an admin for
// anyone. PM and Grant bind a service instance to one PM: the router hands
// the service that PM's address and the grant, and checks the grant at the
// PM first. A researcher may launch only such bound services.
type LaunchRequest struct {
	Service string `json:"service"`
	User    string `json:"user"`
	PM      string `json:"pm,omitempty"`    // id of the PM instance to bind to
	Grant   string `json:"grant,omitempty"` // a grant that PM issued for Service
}

// Instance is one running (or paused) per-user service instance.
type Instance struct {
	ID      string    `json:"id"`
	Service string    `json:"service"`
	User    string    `json:"user"`
	Address string    `json:"address"`
	Image   string    `json:"image"`
	Digest  string    `json:"digest"`
	Machine string    `json:"machine"`
	State   string    `json:"state,omitempty"`
	Created time.Time `json:"created,omitzero"`
	// Hint says what a caller does about the state: a paused instance
	// (paused by its owner, or by its service's idle policy) answers no
	// call until it is resumed with POST /v1/instances/{id}/resume, which
	// its owner may do.
	Hint string `json:"hint,omitempty"`
	// Owner is the router identity that launched it; only they (and
	// admins) see and act on it.
	Owner string `json:"owner,omitempty"`
	// PM is the PM instance a bound service reaches.
	PM string `json:"pm,omitempty"`
	// Secret is the instance's bearer credential (upcs_...): sent once, in
	// the answer to its launch, and kept by the router only as a hash.
	// Every call to the instance but /healthz must bear it; at a PM it is
	// the owner's credential, and claims (unseals) a fresh PM.
	Secret string `json:"secret,omitempty"`
}

// InstanceList answers GET /v1/instances.
type InstanceList struct {
	Instances []Instance `json:"instances"`
}

// ClearResult answers POST /v1/clear.
type ClearResult struct {
	Removed int `json:"removed"`
}

// NetworksResult answers POST /v1/networks.
type NetworksResult struct {
	Machines []string `json:"machines"`
}

// StoredVolume is one of a user's per-user volumes: a Docker volume on a
// machine, or a Kubernetes claim.
type StoredVolume struct {
	Name    string `json:"name"`              // the volume's or claim's name
	Volume  string `json:"volume"`            // the catalog volume it holds ("data")
	Machine string `json:"machine,omitempty"` // the machine holding it (Docker)
}

// Storage answers GET /v1/storage/{user} (the user's volumes, which outlive
// their instances) and DELETE /v1/storage/{user} (the volumes it erased).
type Storage struct {
	User    string         `json:"user"`
	Volumes []StoredVolume `json:"volumes"`
}

// ServiceRequest is the original router's POST /service_request body. The
// original had no user; an optional one is accepted (older originals sent it).
type ServiceRequest struct {
	Service string `json:"service"`
	User    string `json:"user,omitempty"`
}

// AddressResponse is the original router's answer to /service_request.
type AddressResponse struct {
	Address string `json:"address"`
	// Secret is the instance's credential when the request bore a token
	// (the original scripts send none, and get none).
	Secret string `json:"secret,omitempty"`
}

// AddressRequest is the original body of /pause, /unpause and /kill.
type AddressRequest struct {
	Address string `json:"address"`
}

// Error is the JSON body of every error answer.
type Error struct {
	Error string `json:"error"`
}

// Roles of router identities.
const (
	RoleUser       = "user"       // owns the instances launched for them
	RoleResearcher = "researcher" // launches services bound by owners' grants
	RoleAdmin      = "admin"      // every instance, clear, networks, users
	RoleMonitor    = "monitor"    // reads the router's /metrics (a scraper), nothing else
)

// NewUser asks POST /v1/users for an identity (admin only).
type NewUser struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// User is one router identity. Token (upcu_...) is sent once, when it is
// created; the router keeps its hash.
type User struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Created time.Time `json:"created,omitzero"`
	Token   string    `json:"token,omitempty"`
}

// UserList answers GET /v1/users.
type UserList struct {
	Users []User `json:"users"`
}

// Package api holds the router's wire types, shared by the server (package
// router) and the typed client (package routerclient).
package api

import "time"

// LaunchRequest asks for a new instance of a catalog service for a user.
type LaunchRequest struct {
	Service string `json:"service"`
	User    string `json:"user"`
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

// ServiceRequest is the original router's POST /service_request body. The
// original had no user; an optional one is accepted (older originals sent it).
type ServiceRequest struct {
	Service string `json:"service"`
	User    string `json:"user,omitempty"`
}

// AddressResponse is the original router's answer to /service_request.
type AddressResponse struct {
	Address string `json:"address"`
}

// AddressRequest is the original body of /pause, /unpause and /kill.
type AddressRequest struct {
	Address string `json:"address"`
}

// Error is the JSON body of every error answer.
type Error struct {
	Error string `json:"error"`
}

// Package api holds the pipeline service's wire types, shared by the service
// (services/pipeline/server) and its callers (the user's client).
package api

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Paths of the pipeline service.
const (
	// PathRun is the versioned endpoint: Request in, Result out.
	PathRun = "/v1/run"
	// PathRunOriginal is the original endpoint: Request in, {"success": bool} out.
	PathRunOriginal = "/run_pipeline"
)

// Request is the body of both endpoints.
type Request struct {
	PMAddress string `json:"pm_address"`
	UUID      string `json:"uuid"`
	// Grant is the user's grant at that PM, for a service shared by many
	// users; a per-user service is bound to its PM at launch instead.
	Grant string `json:"grant,omitempty"`
}

// Validate returns every problem of the request. A pm_address, when given,
// must be an http(s) address; whether one is required depends on the
// service (a service bound to its user's PM needs none).
func (r Request) Validate() error {
	var errs []error
	if r.PMAddress != "" {
		a := r.PMAddress
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		if u, err := url.Parse(a); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			errs = append(errs, fmt.Errorf("pm_address %q is not an http(s) address", r.PMAddress))
		}
	}
	if strings.TrimSpace(r.UUID) == "" {
		errs = append(errs, errors.New("uuid is required"))
	}
	return errors.Join(errs...)
}

// Result is the versioned answer.
type Result struct {
	Success bool   `json:"success"`
	UUID    string `json:"uuid"`
	// StageMillis is each stage's wall time.
	StageMillis map[string]float64 `json:"stage_ms"`
	// Written counts the entries the run added, by key.
	Written map[string]int `json:"written"`
}

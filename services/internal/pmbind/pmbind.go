// Package pmbind decides which PM a service request reaches, and with which
// credential, under the instance's access settings (docs/security.md):
//
//   - bound (a per-user service, UPC_PM_ADDRESS + UPC_PM_GRANT): always that
//     PM with that grant; a request naming another PM is refused (403);
//   - shared (no binding): each request names its PM and carries that
//     user's grant (400 without), and the PM decides;
//   - legacy: the request's pm_address, as the original services did.
package pmbind

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// Target is the PM a request uses and the grant it bears there ("" for
// none, in legacy mode).
type Target struct {
	Address string
	Grant   string
}

// Resolve returns the PM and grant for a request that named reqAddress and
// reqGrant (either may be empty), under in.
func Resolve(in access.Instance, reqAddress, reqGrant string) (Target, error) {
	switch {
	case in.PMAddress != "":
		if reqAddress != "" && !SameAddress(reqAddress, in.PMAddress) {
			return Target{}, httpx.Errorf(http.StatusForbidden, "this service is bound to another PM: send no pm_address, or its own")
		}
		return Target{Address: in.PMAddress, Grant: in.PMGrant}, nil
	case in.Legacy:
		if reqAddress == "" {
			return Target{}, httpx.BadRequest("pm_address is required")
		}
		if err := CheckAddress(reqAddress); err != nil {
			return Target{}, httpx.BadRequest("%v", err)
		}
		return Target{Address: reqAddress, Grant: reqGrant}, nil
	}
	var errs []error
	if reqAddress == "" {
		errs = append(errs, errors.New("pm_address is required"))
	} else if err := CheckAddress(reqAddress); err != nil {
		errs = append(errs, err)
	}
	if reqGrant == "" {
		errs = append(errs, errors.New("grant is required: this service is shared, and reaches a user's PM only with a grant of theirs"))
	}
	if err := errors.Join(errs...); err != nil {
		return Target{}, httpx.BadRequest("%v", err)
	}
	return Target{Address: reqAddress, Grant: reqGrant}, nil
}

// CheckAddress says what is wrong with a PM address a request names: it
// must be an http(s) URL of a host (and port), with nothing else (no user,
// path, query or fragment), or the original's bare "host:port".
func CheckAddress(addr string) error {
	u, err := url.Parse(Normalize(addr))
	if err != nil {
		return fmt.Errorf("pm_address %q is not a URL: %v", addr, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("pm_address %q is not an http(s) address (scheme %q; https, or http for a legacy PM)", addr, u.Scheme)
	case u.Hostname() == "":
		return fmt.Errorf("pm_address %q names no host", addr)
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("pm_address %q: want only scheme, host and port (https://host:port)", addr)
	}
	return nil
}

// Normalize adds http:// to an address without a scheme (as the original's
// "host:port" was) and drops a trailing slash.
func Normalize(addr string) string {
	addr = strings.TrimSpace(addr)
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/")
}

// SameAddress reports whether a and b name the same PM (scheme and host
// compared without case).
func SameAddress(a, b string) bool {
	return strings.EqualFold(Normalize(a), Normalize(b))
}

// Error reports a failed call to the PM: a refusal (401 or 403: the grant
// does not open this PM, or not for this) as 403, another 4xx as itself,
// anything else as 502. msg says what failed.
func Error(msg string, err error) error {
	var se *pmclient.StatusError
	if errors.As(err, &se) && se.Code >= 400 && se.Code < 500 {
		code := se.Code
		if code == http.StatusUnauthorized {
			code = http.StatusForbidden
		}
		return &httpx.Error{Code: code, Msg: msg + ": the PM answered " + se.Error(), Err: err}
	}
	return &httpx.Error{Code: http.StatusBadGateway, Msg: msg, Err: err}
}

// Refused reports whether err is the PM's refusal of the credential (401 or
// 403).
func Refused(err error) bool {
	var se *pmclient.StatusError
	return errors.As(err, &se) && (se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden)
}

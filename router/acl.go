package router

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/router/api"
)

// Who may do what (docs/security.md):
//   - a user launches for themselves; a researcher only services bound to a
//     PM by a grant its owner issued, never a PM; an admin anything, naming
//     the user;
//   - get, pause, resume, delete and list reach the caller's own instances
//     (Owner = their name); admins reach all. To anyone else another's
//     instance and a missing one look the same: 403 "no instance X of yours";
//   - clear, networks and users are admins' (the legacy caller of
//     insecure_legacy clears only what it launched);
//   - a user's stored data (storage.go) is that user's and admins'.

// PMService is the catalog's permission manager: the service holding a
// user's data, which grants bind other services to.
const PMService = "pm"

// ErrPMUnreachable: a bound launch could not ask the PM about its grant.
var ErrPMUnreachable = errors.New("the PM did not answer")

// holdsUserData reports whether instances of svc mount a user's data: the
// PM, or anything with per-user volumes. Only their owner (or an admin)
// launches them; none is ever bound to a PM.
func holdsUserData(svc conf.Service) bool {
	return svc.Name == PMService || slices.ContainsFunc(svc.Volumes, func(v conf.Volume) bool { return v.PerUser })
}

func notYours(id ID) error {
	return fmt.Errorf("%w: no instance %s of yours", ErrForbidden, id)
}

// Own returns the instance id if who may act on it: their own, or any for
// an admin. A non-admin learns nothing of instances not theirs.
func (r *Router) Own(who Identity, id ID) (Instance, error) {
	in, err := r.Get(id)
	if who.IsAdmin() {
		return in, err
	}
	if errors.Is(err, ErrInvalid) {
		return Instance{}, err
	}
	if err != nil || who.Name == "" || in.Owner != who.Name {
		return Instance{}, notYours(id)
	}
	return in, nil
}

// OwnByAddress is Own for the original endpoints' handle, the address.
func (r *Router) OwnByAddress(who Identity, address string) (Instance, error) {
	in, err := r.ByAddress(address)
	if who.IsAdmin() {
		return in, err
	}
	if errors.Is(err, ErrInvalid) {
		return Instance{}, err
	}
	if err != nil || who.Name == "" || in.Owner != who.Name {
		return Instance{}, fmt.Errorf("%w: no instance at address %q of yours", ErrForbidden, strings.TrimSpace(address))
	}
	return in, nil
}

// ListFor returns the instances who may see (all or one user's).
func (r *Router) ListFor(who Identity, user string) ([]Instance, error) {
	all, err := r.List(user)
	if err != nil || who.IsAdmin() {
		return all, err
	}
	return slices.DeleteFunc(all, func(in Instance) bool { return who.Name == "" || in.Owner != who.Name }), nil
}

// ClearFor removes every instance (admins), or the legacy caller's own.
func (r *Router) ClearFor(ctx context.Context, who Identity) (int, error) {
	switch who.Role {
	case api.RoleAdmin:
		return r.Clear(ctx)
	case RoleLegacy:
		mine, _ := r.ListFor(who, "")
		n := 0
		for _, in := range mine {
			if err := r.Delete(ctx, in.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return n, fmt.Errorf("clear: %w", err)
			}
			n++
		}
		return n, nil
	}
	return 0, fmt.Errorf("%w: only an admin may clear every instance", ErrForbidden)
}

// refusedGrant is the one answer to a grant the PM refused and to a PM
// that does not exist: a researcher learns nothing of PMs from it.
func refusedGrant(pm ID) error {
	return fmt.Errorf("%w: PM %s refused the grant (expired, revoked, another PM's, or no such PM)", ErrForbidden, pm)
}

// grantRE: what a grant may look like before the router sends it to a PM
// and puts it in an instance's environment.
var grantRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

// LaunchAs launches what req asks, if who may (see the rules above). The
// answer carries the new instance's secret.
func (r *Router) LaunchAs(ctx context.Context, who Identity, req api.LaunchRequest) (Instance, error) {
	svc, err := r.Lookup(req.Service)
	if err != nil {
		return Instance{}, err
	}
	// Admins are the operator's own tools (the aggregator launches for
	// thousands of users): everyone else's launches are rate-limited.
	if who.Role != api.RoleAdmin {
		if err := r.lim.allow(who.Name); err != nil {
			return Instance{}, err
		}
	}
	if req.PM != "" || req.Grant != "" {
		return r.launchBound(ctx, who, svc, req)
	}
	o := launchOrder{service: svc.Name, user: req.User, owner: who.Name}
	switch who.Role {
	case api.RoleAdmin:
		if req.User == "" {
			return Instance{}, fmt.Errorf("%w: user: required (an admin names the user it launches for)", ErrInvalid)
		}
	case api.RoleUser:
		if req.User != "" && req.User != who.Name {
			return Instance{}, fmt.Errorf("%w: a user launches only for themselves (user %q is not %q)", ErrForbidden, req.User, who.Name)
		}
		o.user = who.Name
	case api.RoleResearcher:
		return Instance{}, fmt.Errorf("%w: a researcher launches only services bound to a PM by its owner's grant (pm and grant), never a %s", ErrForbidden, svc.Name)
	default:
		return Instance{}, fmt.Errorf("%w: %q may not launch here", ErrForbidden, who.Name)
	}
	if Reserved(o.user) {
		return Instance{}, fmt.Errorf("%w: user %q is reserved for the original scripts", ErrInvalid, o.user)
	}
	return r.launch(ctx, o)
}

// launchBound launches svc bound to the PM req names, once that PM has
// confirmed req's grant is its own, valid, and for svc.
func (r *Router) launchBound(ctx context.Context, who Identity, svc conf.Service, req api.LaunchRequest) (Instance, error) {
	var errs []error
	if req.PM == "" {
		errs = append(errs, errors.New("pm: required with a grant"))
	}
	if req.Grant == "" {
		errs = append(errs, errors.New("grant: required with a pm"))
	} else if !grantRE.MatchString(req.Grant) || !strings.HasPrefix(req.Grant, access.PrefixGrant) {
		errs = append(errs, fmt.Errorf("grant: not a grant (%s...)", access.PrefixGrant))
	}
	if err := errors.Join(errs...); err != nil {
		return Instance{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if holdsUserData(svc) {
		if who.Role == api.RoleResearcher {
			return Instance{}, fmt.Errorf("%w: a researcher never launches a %s", ErrForbidden, svc.Name)
		}
		return Instance{}, fmt.Errorf("%w: %s holds a user's data: it is launched for its user, never bound to a PM", ErrInvalid, svc.Name)
	}
	if err := ValidID(req.PM); err != nil {
		return Instance{}, err
	}
	var pm Instance
	switch who.Role {
	case api.RoleAdmin:
		var err error
		if pm, err = r.Get(ID(req.PM)); err != nil {
			return Instance{}, err
		}
	case api.RoleUser:
		var err error
		if pm, err = r.Own(who, ID(req.PM)); err != nil {
			return Instance{}, err
		}
	case api.RoleResearcher:
		// The grant is the researcher's proof: any PM, as long as it
		// confirms the grant. A missing PM looks like a refused grant.
		var err error
		if pm, err = r.Get(ID(req.PM)); err != nil || pm.Service != PMService {
			r.logger.Warn("refused", "identity", who.Name, "role", who.Role, "reason", "bound launch on a missing instance or not a PM", "pm", req.PM)
			return Instance{}, refusedGrant(ID(req.PM))
		}
	default:
		return Instance{}, fmt.Errorf("%w: %q may not launch here", ErrForbidden, who.Name)
	}
	if pm.Service != PMService {
		return Instance{}, fmt.Errorf("%w: instance %s is a %s, not a PM", ErrInvalid, pm.ID, pm.Service)
	}
	if req.User != "" && req.User != pm.User {
		return Instance{}, fmt.Errorf("%w: user %q is not the PM's user; leave it out", ErrInvalid, req.User)
	}
	if pm.Simulated {
		return Instance{}, fmt.Errorf("%w: PM %s is on a simulated node, which runs no process to check a grant", ErrPMUnreachable, pm.ID)
	}
	// The PM's grant check (services/pm/api.PathGrantCheck; the router
	// does not import the services): the grant's bearer asks, and the PM
	// answers the grant it issued, or refuses.
	var g struct {
		Service string `json:"service"`
	}
	err := httpx.NewClient("pm", pm.Address, httpx.WithHTTPClient(r.client), httpx.WithBearer(req.Grant)).
		Post(ctx, grantCheckPath, struct{}{}, &g)
	if err != nil {
		var se *httpx.StatusError
		if errors.As(err, &se) && se.Code < 500 {
			r.logger.Warn("refused", "identity", who.Name, "role", who.Role, "reason", "grant refused by the PM", "pm", pm.ID, "err", err)
			return Instance{}, refusedGrant(pm.ID)
		}
		return Instance{}, fmt.Errorf("%w: check grant at PM %s: %v", ErrPMUnreachable, pm.ID, err)
	}
	if g.Service != svc.Name {
		return Instance{}, fmt.Errorf("%w: the grant is for %q, not %q", ErrForbidden, g.Service, svc.Name)
	}
	return r.launch(ctx, launchOrder{service: svc.Name, user: pm.User, owner: who.Name,
		pm: pm.ID, pmAddress: pm.Address, grant: req.Grant})
}

// grantCheckPath is the PM's POST /v1/grants/check.
const grantCheckPath = "/v1/grants/check"

package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/router/api"
)

// A user's per-user volumes (their PM's data) outlive instances: delete and
// clear keep them, and the user's next PM mounts them again. Only an erase
// destroys them (docs/security.md):
//   - a user reaches their own stored data (the user named as they are); an
//     admin anyone's; anyone else gets 403 whether or not there is any;
//   - an erase is refused (409, naming it) while an instance holding the
//     user's data runs or is paused, or is being launched, and a launch of
//     one is refused while the erase runs.

// mayReachStorage says whether who may list or erase user's stored data.
func mayReachStorage(who Identity, user string) error {
	if who.IsAdmin() || (who.Role == api.RoleUser && who.Name != "" && who.Name == user) {
		return nil
	}
	return fmt.Errorf("%w: only %s (or an admin) may reach %s's stored data", ErrForbidden, user, user)
}

func (r *Router) storage() (Storage, error) {
	st, ok := r.backend.(Storage)
	if !ok {
		return nil, fmt.Errorf("%w: this backend cannot find or erase stored data", errors.ErrUnsupported)
	}
	return st, nil
}

// StoredVolumes lists user's per-user volumes. It is the in-process call:
// no role is checked (StorageFor checks them).
func (r *Router) StoredVolumes(ctx context.Context, user string) ([]StoredVolume, error) {
	if err := ValidUser(user); err != nil {
		return nil, err
	}
	st, err := r.storage()
	if err != nil {
		return nil, err
	}
	vs, err := st.UserStorage(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("find %s's stored data: %w", user, err)
	}
	return vs, nil
}

// StorageFor is StoredVolumes for who, if who may.
func (r *Router) StorageFor(ctx context.Context, who Identity, user string) ([]StoredVolume, error) {
	if err := ValidUser(user); err != nil {
		return nil, err
	}
	if err := mayReachStorage(who, user); err != nil {
		return nil, err
	}
	return r.StoredVolumes(ctx, user)
}

// Erase destroys user's per-user volumes and everything in them, and
// reports what it removed (nothing, when the user has no stored data). It
// is refused while an instance holding the user's data is in the router's
// view (running or paused) or being launched; while it runs, such launches
// are refused. It is the in-process call: no role is checked (EraseFor
// checks them).
func (r *Router) Erase(ctx context.Context, user string) ([]StoredVolume, error) {
	if err := ValidUser(user); err != nil {
		return nil, err
	}
	st, err := r.storage()
	if err != nil {
		return nil, err
	}
	release, err := r.reserveErase(user)
	if err != nil {
		return nil, fmt.Errorf("erase %s's stored data: %w", user, err)
	}
	defer release()
	removed, err := st.EraseUserStorage(ctx, user, r.wipeSpec(user))
	if err != nil {
		return removed, fmt.Errorf("erase %s's stored data: %w", user, err)
	}
	names := make([]string, len(removed))
	for i, v := range removed {
		names[i] = v.Name
	}
	r.logger.Info("erased stored data", "user", user, "volumes", names)
	return removed, nil
}

// EraseFor is Erase for who, if who may.
func (r *Router) EraseFor(ctx context.Context, who Identity, user string) ([]StoredVolume, error) {
	if err := ValidUser(user); err != nil {
		return nil, err
	}
	if err := mayReachStorage(who, user); err != nil {
		return nil, err
	}
	removed, err := r.Erase(ctx, user)
	if err == nil {
		r.logger.Info("erase asked", "user", user, "by", who.Name, "role", who.Role)
	}
	return removed, err
}

// reserveErase marks user's data as being erased, unless an instance
// holding it is known (running or paused) or being launched; release ends
// the mark. admit refuses data-holding launches for a marked user.
func (r *Router) reserveErase(user string) (release func(), err error) {
	l := r.lim
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.erasing[user] {
		return nil, fmt.Errorf("%w: %s's stored data is being erased already", ErrConflict, user)
	}
	for key := range l.holding {
		if u, svc, _ := strings.Cut(key, "\x00"); u == user {
			return nil, fmt.Errorf("%w: %s's %s is being launched: wait for it, delete it, then erase", ErrConflict, user, svc)
		}
	}
	r.mu.RLock()
	var holders []Instance
	for _, in := range r.instances {
		if in.User != user {
			continue
		}
		// A service the catalog no longer knows may hold data: it counts.
		if svc, ok := r.catalog.Lookup(in.Service); !ok || holdsUserData(svc) {
			holders = append(holders, in)
		}
	}
	r.mu.RUnlock()
	if len(holders) > 0 {
		slices.SortFunc(holders, func(a, b Instance) int { return strings.Compare(string(a.ID), string(b.ID)) })
		var named []string
		for _, in := range holders {
			named = append(named, fmt.Sprintf("%s %s (%s)", in.Service, in.ID, in.State))
		}
		return nil, fmt.Errorf("%w: %s's data is in use by %s: delete it first, then erase", ErrConflict, user, strings.Join(named, ", "))
	}
	l.erasing[user] = true
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.erasing, user)
	}, nil
}

// wipeSpec describes, for a backend that must run something to empty a
// volume (see Storage), the catalog's first service with per-user volumes:
// its image is one the backend runs already, and it carries wipe-data.
func (r *Router) wipeSpec(user string) Spec {
	s := Spec{ID: newID(), User: user}
	for _, svc := range r.catalog.Services {
		if slices.ContainsFunc(svc.Volumes, func(v conf.Volume) bool { return v.PerUser }) {
			s.Service, s.Image, s.Digest, s.Volumes, s.Resources = svc.Name, svc.Image, svc.Digest, svc.Volumes, svc.Resources
			break
		}
	}
	return s
}

package router

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/e-mission/upc/internal/atomicfile"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/router/api"
)

// Identity is who made a request: a user of the users file, the admin of
// admin_token_file, or (only with insecure_legacy, only on the original
// endpoints, only without a token) the legacy caller.
type Identity struct {
	Name string
	Role string // api.RoleUser, api.RoleResearcher, api.RoleAdmin, api.RoleMonitor, or RoleLegacy
}

// Reserved identity names: AdminName is the identity of admin_token_file,
// LegacyName the token-less caller of the original endpoints, whose
// instances are launched for users "legacy-<id>".
const (
	AdminName  = "admin"
	LegacyName = "legacy"
	// RoleLegacy is the token-less original scripts' role (insecure_legacy).
	RoleLegacy = "legacy"
)

// IsAdmin reports whether id may do anything.
func (id Identity) IsAdmin() bool { return id.Role == api.RoleAdmin }

// ValidRole reports whether role may be given to a user of the store.
func ValidRole(role string) error {
	switch role {
	case api.RoleUser, api.RoleResearcher, api.RoleAdmin, api.RoleMonitor:
		return nil
	}
	return fmt.Errorf("%w: role %q must be one of %s, %s, %s, %s", ErrInvalid, role, api.RoleUser, api.RoleResearcher, api.RoleAdmin, api.RoleMonitor)
}

// Reserved reports whether name may not be given to a user of the store:
// "admin" (the admin token), "legacy" and "legacy-..." (the original
// scripts' users under insecure_legacy).
func Reserved(name string) bool {
	n := strings.ToLower(name)
	return n == AdminName || n == LegacyName || strings.HasPrefix(n, LegacyName+"-")
}

// MinAdminTokenLen is the shortest admin token accepted: 32 characters (128
// bits as hex digits at the least; `upc users` tokens carry 256).
const MinAdminTokenLen = 32

// ErrUserExists: the name is taken.
var ErrUserExists = errors.New("user exists")

// storedUser is one entry of the users file; the token is kept only as its
// SHA-256.
type storedUser struct {
	Name        string    `json:"name"`
	Role        string    `json:"role"`
	TokenSHA256 string    `json:"token_sha256"`
	Created     time.Time `json:"created"`
}

type usersFile struct {
	Users []storedUser `json:"users"`
}

// Users is the router's identity store: the users file (JSON, mode 0600,
// replaced atomically on each change) holding names, roles and token hashes,
// and the admin token's hash. A nil *Users knows no one.
type Users struct {
	path      string
	adminHash string
	now       func() time.Time

	mu    sync.RWMutex
	users []storedUser
}

// OpenUsers loads the users file at path (a missing file is an empty store,
// written at the first change; an empty path keeps the store in memory) and
// sets the admin token (empty: no admin identity). A users file that group
// or others may write is refused: whoever writes it chooses the admins.
func OpenUsers(path, adminToken string) (*Users, error) {
	u := &Users{path: path, now: time.Now}
	if adminToken != "" {
		if len(adminToken) < MinAdminTokenLen || strings.ContainsAny(adminToken, " \t\r\n") {
			return nil, fmt.Errorf("admin token: want %d or more characters and no spaces (e.g. `openssl rand -hex 32`)", MinAdminTokenLen)
		}
		u.adminHash = access.Hash(adminToken)
	}
	if path == "" {
		return u, nil
	}
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return u, nil
	}
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("users file %s: mode %s lets others write it; chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	var f usersFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	seen := map[string]bool{}
	var errs []error
	for i, s := range f.Users {
		switch {
		case ValidUser(s.Name) != nil:
			errs = append(errs, fmt.Errorf("users[%d]: name %q is not a valid user name", i, s.Name))
		case Reserved(s.Name):
			errs = append(errs, fmt.Errorf("users[%d]: name %q is reserved", i, s.Name))
		case seen[s.Name]:
			errs = append(errs, fmt.Errorf("users[%d]: %q appears twice", i, s.Name))
		}
		seen[s.Name] = true
		if err := ValidRole(s.Role); err != nil {
			errs = append(errs, fmt.Errorf("users[%d]: %v", i, err))
		}
		if !access.ValidHash(s.TokenSHA256) {
			errs = append(errs, fmt.Errorf("users[%d]: token_sha256 is not a SHA-256", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	u.users = f.Users
	return u, nil
}

// Authenticate finds the identity whose token this is.
func (u *Users) Authenticate(token string) (Identity, bool) {
	if u == nil || token == "" {
		return Identity{}, false
	}
	// Every entry is compared (in constant time each), so the time taken
	// says nothing of which one matched.
	var found Identity
	ok := false
	if access.Match(token, u.adminHash) {
		found, ok = Identity{Name: AdminName, Role: api.RoleAdmin}, true
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	for _, s := range u.users {
		if access.Match(token, s.TokenSHA256) && !ok {
			found, ok = Identity{Name: s.Name, Role: s.Role}, true
		}
	}
	return found, ok
}

// Add creates an identity and returns it with its token, which is never
// stored and cannot be shown again.
func (u *Users) Add(name, role string) (api.User, error) {
	if err := ValidUser(name); err != nil {
		return api.User{}, err
	}
	if Reserved(name) {
		return api.User{}, fmt.Errorf("%w: user name %q is reserved (admin, legacy, legacy-*)", ErrInvalid, name)
	}
	if err := ValidRole(role); err != nil {
		return api.User{}, err
	}
	tok := access.NewToken(access.PrefixUser)
	s := storedUser{Name: name, Role: role, TokenSHA256: access.Hash(tok), Created: u.now().UTC().Truncate(time.Second)}
	u.mu.Lock()
	defer u.mu.Unlock()
	if slices.ContainsFunc(u.users, func(x storedUser) bool { return strings.EqualFold(x.Name, name) }) {
		return api.User{}, fmt.Errorf("%w: %q", ErrUserExists, name)
	}
	next := append(slices.Clone(u.users), s)
	if err := u.save(next); err != nil {
		return api.User{}, err
	}
	u.users = next
	return api.User{Name: s.Name, Role: s.Role, Created: s.Created, Token: tok}, nil
}

// Remove deletes an identity: its token stops working at once. Its
// instances stay (an admin may remove them).
func (u *Users) Remove(name string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	i := slices.IndexFunc(u.users, func(x storedUser) bool { return x.Name == name })
	if i < 0 {
		return fmt.Errorf("%w: no user %q", ErrNotFound, name)
	}
	next := slices.Delete(slices.Clone(u.users), i, i+1)
	if err := u.save(next); err != nil {
		return err
	}
	u.users = next
	return nil
}

// List returns the identities by name, tokens left out (the admin of
// admin_token_file is not listed: it is no entry of the file).
func (u *Users) List() []api.User {
	if u == nil {
		return []api.User{}
	}
	u.mu.RLock()
	out := make([]api.User, 0, len(u.users))
	for _, s := range u.users {
		out = append(out, api.User{Name: s.Name, Role: s.Role, Created: s.Created})
	}
	u.mu.RUnlock()
	slices.SortFunc(out, func(a, b api.User) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// save writes users to the file atomically: a temporary file of mode 0600
// in the same directory, synced, then renamed over the old one.
func (u *Users) save(users []storedUser) error {
	if u.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(usersFile{Users: users}, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(u.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if err := atomicfile.Write(u.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	return nil
}

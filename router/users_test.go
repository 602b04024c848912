package router

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/router/api"
)

// TestUsersStore: tokens are shown once and stored hashed, in a file of
// mode 0600 that a new store reads back; reserved names, bad roles and
// duplicates are refused; a removed user's token stops working.
func TestUsersStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "users.json") // a directory the first save makes
	admin := strings.Repeat("a", MinAdminTokenLen)
	u, err := OpenUsers(path, admin)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := u.Authenticate(admin); !ok || id.Name != AdminName || !id.IsAdmin() {
		t.Fatalf("admin token: %+v %v", id, ok)
	}
	alice, err := u.Add("alice", api.RoleUser)
	if err != nil || !strings.HasPrefix(alice.Token, "upcu_") || len(alice.Token) < 40 {
		t.Fatalf("add: %+v %v", alice, err)
	}
	rex, err := u.Add("rex", api.RoleResearcher)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("users file: %v %v, want mode 0600", st, err)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), alice.Token) || !strings.Contains(string(b), `"token_sha256"`) {
		t.Fatalf("users file holds a token or no hash:\n%s", b)
	}
	var f usersFile
	if err := json.Unmarshal(b, &f); err != nil || len(f.Users) != 2 {
		t.Fatalf("users file: %s %v", b, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("temporary files left beside the users file: %v", ents)
	}

	for _, c := range []struct{ name, role, want string }{
		{"admin", api.RoleUser, "reserved"},
		{"Admin", api.RoleUser, "reserved"},
		{"legacy", api.RoleUser, "reserved"},
		{"legacy-1234", api.RoleUser, "reserved"},
		{"bob", "root", "role"},
		{"bob", "", "role"},
		{"../x", api.RoleUser, "user"},
		{"alice", api.RoleAdmin, "exists"},
		{"ALICE", api.RoleUser, "exists"},
	} {
		if _, err := u.Add(c.name, c.role); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("add %q %q: %v, want an error saying %q", c.name, c.role, err, c.want)
		}
	}

	// A new store (a router restart) reads the same identities.
	u2, err := OpenUsers(path, "")
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := u2.Authenticate(rex.Token); !ok || id.Name != "rex" || id.Role != api.RoleResearcher {
		t.Fatalf("after reopen: %+v %v", id, ok)
	}
	if _, ok := u2.Authenticate(admin); ok {
		t.Fatal("the admin token works on a store opened without it")
	}
	for _, bad := range []string{"", "upcu_nope", alice.Token + "x", strings.ToUpper(alice.Token)} {
		if id, ok := u2.Authenticate(bad); ok {
			t.Errorf("token %q authenticated as %+v", bad, id)
		}
	}
	if l := u2.List(); len(l) != 2 || l[0].Name != "alice" || l[0].Token != "" || l[1].Role != api.RoleResearcher {
		t.Fatalf("list: %+v", l)
	}
	if err := u2.Remove("alice"); err != nil {
		t.Fatal(err)
	}
	if err := u2.Remove("alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
	if _, ok := u2.Authenticate(alice.Token); ok {
		t.Fatal("a removed user's token still works")
	}
	u3, _ := OpenUsers(path, "")
	if _, ok := u3.Authenticate(alice.Token); ok {
		t.Fatal("a removed user's token works after a restart")
	}
}

// TestUsersFileRefused: a file others may write, a malformed one and
// entries with reserved names or bad hashes are refused; a short admin
// token too.
func TestUsersFileRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), mode)
		os.Chmod(p, mode)
		return p
	}
	good := `{"users":[{"name":"a","role":"user","token_sha256":"` + strings.Repeat("0", 64) + `"}]}`
	for _, c := range []struct {
		name, body string
		mode       os.FileMode
		want       string
	}{
		{"writable.json", good, 0o666, "lets others write"},
		{"malformed.json", `{"users":`, 0o600, "users file"},
		{"reserved.json", strings.Replace(good, `"a"`, `"admin"`, 1), 0o600, "reserved"},
		{"hash.json", strings.Replace(good, strings.Repeat("0", 64), "abc", 1), 0o600, "token_sha256"},
		{"role.json", strings.Replace(good, `"user"`, `"god"`, 1), 0o600, "role"},
		{"twice.json", `{"users":[{"name":"a","role":"user","token_sha256":"` + strings.Repeat("0", 64) + `"},{"name":"a","role":"user","token_sha256":"` + strings.Repeat("1", 64) + `"}]}`, 0o600, "twice"},
	} {
		if _, err := OpenUsers(write(c.name, c.body, c.mode), ""); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if _, err := OpenUsers(write("ok.json", good, 0o600), ""); err != nil {
		t.Fatalf("a good file: %v", err)
	}
	if _, err := OpenUsers("", "short"); err == nil {
		t.Fatal("a short admin token was accepted")
	}
}

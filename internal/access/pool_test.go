package access

import (
	"errors"
	"strings"
	"testing"
)

// TestFromEnvPooled: a warm-pool PM starts with no owner, and with nothing
// that would give it one (or none at all) before the router's provision.
func TestFromEnvPooled(t *testing.T) {
	h := Hash("upcs_x")
	for _, c := range []struct {
		name string
		env  map[string]string
		want string // "" ok; else a substring of the error
	}{
		{"pooled", map[string]string{EnvPooled: "1"}, ""},
		{"pooled true", map[string]string{EnvPooled: "true"}, ""},
		{"pooled with a hash", map[string]string{EnvPooled: "1", EnvSHA256: h}, "starts with no owner"},
		{"pooled and legacy", map[string]string{EnvPooled: "1", EnvLegacy: "1"}, "starts with no owner"},
		{"pooled and bound", map[string]string{EnvPooled: "1", EnvPMAddress: "https://x", EnvPMGrant: "upcg_x"}, "starts with no owner"},
		{"pooled maybe", map[string]string{EnvPooled: "yes"}, "want 1 or 0"},
		{"not pooled, nothing", map[string]string{EnvPooled: "0"}, ErrNoAccess.Error()},
		{"owner", map[string]string{EnvSHA256: h}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			in, err := FromEnv(func(k string) string { return c.env[k] })
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("FromEnv: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("FromEnv: %v, want an error saying %q", err, c.want)
			case c.want == "" && in.Pooled != (c.env[EnvPooled] != ""):
				t.Fatalf("Pooled = %v for %v", in.Pooled, c.env)
			}
		})
	}
	if _, err := FromEnv(func(string) string { return "" }); !errors.Is(err, ErrNoAccess) {
		t.Fatalf("no access settings: %v, want ErrNoAccess", err)
	}
}

func TestProvisionValidate(t *testing.T) {
	ok := Provision{User: "alice", SHA256: Hash("upcs_x")}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Provision{{User: "", SHA256: ok.SHA256}, {User: "a/b", SHA256: ok.SHA256}, {User: "alice", SHA256: "abc"}, {User: "alice"}} {
		if err := p.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", p)
		}
	}
}

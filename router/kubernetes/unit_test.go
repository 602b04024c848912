package kubernetes_test

import (
	"context"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	upck8s "github.com/e-mission/upc/router/kubernetes"
)

func TestClaimName(t *testing.T) {
	seen := map[string]string{}
	for _, u := range []string{"alice", "Alice", "a.l.i.c.e", "a_l_i_c_e", "bob-", "0123456789012345678901234567890123456789012345678901234567890ab"} {
		n := upck8s.ClaimName(u, "data")
		if prev, dup := seen[n]; dup {
			t.Errorf("users %q and %q share claim %q", prev, u, n)
		}
		seen[n] = u
		if len(n) > 63 {
			t.Errorf("claim of %q is %d characters: %q", u, len(n), n)
		}
		for _, r := range n {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				t.Errorf("claim of %q has %q: %q", u, r, n)
			}
		}
	}
	if upck8s.ClaimName("alice", "data") != upck8s.ClaimName("alice", "data") {
		t.Error("claim names are not stable")
	}
}

// TestUnitApplyRBACWithFakeAPI applies the manifest to client-go's fake
// clientset (a stand-in, this is a unit test): every object decodes, and the
// Role grants only pods, services, claims and network policies.
func TestUnitApplyRBACWithFakeAPI(t *testing.T) {
	cs := fake.NewClientset()
	ctx := context.Background()
	if err := upck8s.ApplyRBAC(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if err := upck8s.ApplyRBAC(ctx, cs); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	role, err := cs.RbacV1().Roles(upck8s.RouterNamespace).Get(ctx, "upc-router", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range role.Rules {
		for _, res := range r.Resources {
			switch res {
			case "pods", "services", "persistentvolumeclaims", "networkpolicies":
			default:
				t.Errorf("the router's Role grants %q", res)
			}
		}
	}
	cr, err := cs.RbacV1().ClusterRoles().Get(ctx, "upc-router", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range cr.Rules {
		for _, v := range r.Verbs {
			// Volumes: bound again to a kept volume's new claim (patch), and
			// deleted with their user's data (delete).
			if v != "get" && v != "list" && v != "create" && !((v == "patch" || v == "delete") && slices.Equal(r.Resources, []string{"persistentvolumes"})) {
				t.Errorf("the router's ClusterRole grants %q on %v", v, r.Resources)
			}
		}
	}
}

// TestRulesAreTheManifests: the rules other deployments (infra/) take are
// exactly the Role's and the ClusterRole's of rbac.yaml.
func TestRulesAreTheManifests(t *testing.T) {
	role, cluster, err := upck8s.Rules()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range append(slices.Clone(role), cluster...) {
		got = append(got, r.Resources...)
	}
	want := []string{"pods", "services", "persistentvolumeclaims", "networkpolicies", "nodes", "persistentvolumes"}
	if !slices.Equal(got, want) {
		t.Errorf("rules cover %v, want %v", got, want)
	}
}

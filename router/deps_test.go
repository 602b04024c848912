package router

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCoreImports keeps the core free of backends: it must not import
// router/docker, router/kubernetes, the Docker SDK or client-go, even
// indirectly.
func TestCoreImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/e-mission/upc/router/docker",
		"github.com/e-mission/upc/router/kubernetes",
		"github.com/moby/",
		"github.com/docker/",
		"k8s.io/",
		"sigs.k8s.io/controller-runtime",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %v", deps)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("the router core depends on %s", d)
			}
		}
	}
}

package layers

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/e-mission/upc/"

// may lists, for each part of the repository (the first element of an import
// path below the module), the parts its non-test code may import besides
// itself. Nothing may import cmd/ or infra/ (a module of its own).
var may = map[string][]string{
	"conf":       {},
	"internal":   {"conf"},
	"router":     {"conf", "internal"},
	"services":   {"conf", "internal"},
	"client":     {"conf", "internal", "router", "services"},
	"aggregator": {"conf", "internal", "router", "services", "client"},
	"harness":    {"conf", "internal", "router", "services", "client", "aggregator"},
	"cmd":        {"conf", "internal", "router", "services", "client", "aggregator", "harness"},
	"scripts":    {},
}

func part(path string) string {
	p, _, _ := strings.Cut(strings.TrimPrefix(path, module), "/")
	return p
}

// No import runs back up: internal/ is a leaf shared by everyone, the
// services never reach the router, the product parts never reach the harness,
// and only cmd/ wires them together.
func TestNoImportRunsBackUp(t *testing.T) {
	// Only stdout is the listing: go list warns on stderr (a results/latest
	// symlink, say), which is no package.
	var stderr strings.Builder
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"...")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s%s", err, out, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 30 {
		t.Fatalf("go list listed only %d packages", len(lines))
	}
	for _, line := range lines {
		f := strings.Fields(line)
		from := part(f[0])
		allowed, known := may[from]
		if !known {
			t.Errorf("%s: part %q has no row in the layer table", f[0], from)
			continue
		}
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			to := part(imp)
			ok := to == from
			for _, a := range allowed {
				ok = ok || a == to
			}
			if !ok {
				t.Errorf("%s imports %s: %s/ may not import %s/", f[0], imp, from, to)
			}
		}
	}
}

// The binaries never compile Pulumi: infra/ is a module of its own.
func TestBinariesFreeOfPulumi(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", module+"cmd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, d := range strings.Fields(string(out)) {
		if strings.Contains(d, "github.com/pulumi/") || strings.HasPrefix(d, module+"infra") {
			t.Errorf("cmd/... depends on %s", d)
		}
	}
}

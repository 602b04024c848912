package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/scenario"
)

// ScenarioCopy is the name of the scenario file's copy beside a report.
const ScenarioCopy = "scenario.yaml"

// provenance fills what reproduces a run besides versions and images: the
// commit the scenario file lies in, the machine, every seed, and the
// scenario file itself (its copy and hash).
func provenance(ctx context.Context, e *report.Environment, sc *scenario.Scenario, scenarioPath string, scenarioFile []byte) {
	e.Commit, e.Dirty = commit(ctx, scenarioPath)
	e.Machine = machine()
	e.Seeds = Seeds(sc)
	sum := sha256.Sum256(scenarioFile)
	e.ScenarioFile, e.ScenarioSHA256 = ScenarioCopy, hex.EncodeToString(sum[:])
}

// Seeds lists what each of a scenario's seeds makes reproducible.
func Seeds(sc *scenario.Scenario) []report.Seed {
	out := []report.Seed{{Name: "scenario", Value: uint64(sc.Seed), Seeds: "the users' ids (with the run id) and PM keys"}}
	if syn := sc.Population.Synthetic; syn != nil {
		out = append(out, report.Seed{Name: "population.synthetic", Value: syn.Seed, Seeds: "the synthetic users' days and shifts"})
	}
	for i, st := range sc.AggregateSteps() {
		out = append(out, report.Seed{Name: fmt.Sprintf("aggregate#%d", i+1), Value: AggregateSeed(sc, i),
			Seeds: fmt.Sprintf("the %s aggregator's noise and its users' ids and keys (experiment mode)", st.Query)})
	}
	return out
}

// commit is HEAD of the repository holding path, and whether its working
// tree differs from it; "" when path is in no repository (or git is missing).
func commit(ctx context.Context, path string) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dir := path
	if fi, err := os.Stat(path); err == nil && !fi.IsDir() {
		dir = dirOf(path)
	}
	head, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		return "", false
	}
	st, err := exec.CommandContext(ctx, "git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output()
	return strings.TrimSpace(string(head)), err == nil && len(bytes.TrimSpace(st)) > 0
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "."
}

// machine reads the OS name, kernel and memory from /etc/os-release and
// /proc (Linux); what cannot be read stays empty.
func machine() report.Machine {
	m := report.Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				if kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))); err == nil {
					m.MemoryMB = kb / 1024
				}
			}
		}
	}
	return m
}

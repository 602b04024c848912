package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/e-mission/upc/aggregator"
)

// cpuSnapshot is the CPU counters scripts/cpu-split.sh reads, in seconds,
// so a stretch of this process (the warm pool's fill) is split the same
// way. Counters that cannot be read stay 0 (no /proc, no engine here).
type cpuSnapshot aggregator.CPU

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

func takeCPU() cpuSnapshot {
	var s cpuSnapshot
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		// user nice system (idle) iowait irq softirq: as cpu-split.sh.
		for _, i := range []int{1, 2, 3, 6, 7, 8} {
			if i < len(f) {
				v, _ := strconv.ParseFloat(f[i], 64)
				s.Busy += v / clockTicks
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.Command = tv(ru.Utime) + tv(ru.Stime)
	}
	s.Dockerd, s.Containerd = oldestCPU("dockerd"), oldestCPU("containerd")
	if b, err := os.ReadFile("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage"); err == nil {
		v, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		s.Containers = v / 1e9
	} else if b, err := os.ReadFile("/sys/fs/cgroup/docker/cpu.stat"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
				us, _ := strconv.ParseFloat(v, 64)
				s.Containers = us / 1e6
			}
		}
	}
	return s
}

// since is the CPU used from s0 to s.
func (s cpuSnapshot) since(s0 cpuSnapshot) aggregator.CPU {
	r := func(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
	return aggregator.CPU{Busy: r(s.Busy - s0.Busy), Command: r(s.Command - s0.Command), Dockerd: r(s.Dockerd - s0.Dockerd),
		Containerd: r(s.Containerd - s0.Containerd), Containers: r(s.Containers - s0.Containers)}
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// oldestCPU is the CPU of the oldest process named name, with the children
// it reaped (dockerd re-executes itself per container: the oldest is the
// daemon), as cpu-split.sh reads it; 0 if there is none or it is not ours
// to read.
func oldestCPU(name string) float64 {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	best, bestStart := "", int64(-1)
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != name {
			continue
		}
		f := statFields(d)
		if len(f) < 20 {
			continue
		}
		start, _ := strconv.ParseInt(f[19], 10, 64)
		if bestStart < 0 || start < bestStart {
			best, bestStart = d, start
		}
	}
	if best == "" {
		return 0
	}
	f := statFields(best)
	if len(f) < 15 {
		return 0
	}
	sum := 0.0
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		v, _ := strconv.ParseFloat(f[i], 64)
		sum += v
	}
	return sum / clockTicks
}

// statFields is /proc/PID/stat's fields after the command name (field 3,
// "state", first), so a name with spaces cannot shift them.
func statFields(dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Down stops every process of the cluster in dir (and the containers of
// its real node), removes its iptables chains (KUBE-* from kube-proxy and
// the kubelet, CNI-* from the CNI plugins), mounts, cgroups, the Docker
// network and pause image, and the folder. It is safe to run twice.
func Down(ctx context.Context, log *slog.Logger, dir string) error {
	if dir == "" || dir == "/" {
		return fmt.Errorf("cluster down: refusing to remove %q", dir)
	}
	start := time.Now()
	var errs []error
	pids, _ := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	sort.Sort(sort.Reverse(sort.StringSlice(pids)))
	sock := ContainerdSocket(dir)
	for _, f := range pids {
		name := strings.TrimSuffix(filepath.Base(f), ".pid")
		if strings.HasSuffix(name, "-containerd") {
			// The kubelet is gone: stop the pods' containers and shims first.
			errs = append(errs, killContainers(log, dir))
		}
		if pid, err := readPid(f); err == nil && ours(pid, dir) {
			stop(log, name, pid)
		}
		if strings.HasSuffix(name, "-containerd") {
			killShims(log, sock)
		}
	}
	if bin, err := os.ReadFile(filepath.Join(dir, "bin-dir")); err == nil && len(bytes.TrimSpace(bin)) > 0 {
		kp := filepath.Join(strings.TrimSpace(string(bin)), "kube-proxy")
		if out, err := exec.CommandContext(ctx, kp, "--cleanup").CombinedOutput(); err != nil {
			log.Warn("kube-proxy --cleanup", "err", err, "out", firstLine(out))
		}
	}
	errs = append(errs, cleanIPTables(ctx, log))
	errs = append(errs, unmountUnder(dir))
	removeCgroups(log)
	if res, _ := filepath.Glob("/var/lib/cni/results/" + NetworkName + "-*"); len(res) > 0 {
		for _, f := range res {
			os.Remove(f)
		}
	}
	if out, err := exec.CommandContext(ctx, "docker", "network", "inspect", "-f", `{{index .Labels "upc.cluster"}}`, NetworkName).Output(); err == nil {
		if strings.TrimSpace(string(out)) == "1" {
			if out, err := exec.CommandContext(ctx, "docker", "network", "rm", NetworkName).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("docker network rm %s: %w: %s", NetworkName, err, firstLine(out)))
			}
		}
	}
	if out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "-f", `{{index .Config.Labels "upc.cluster"}}`, PauseImage).Output(); err == nil && strings.TrimSpace(string(out)) == "1" {
		exec.CommandContext(ctx, "docker", "image", "rm", PauseImage).Run()
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster down: %w", err)
	}
	log.Info("cluster down", "dir", dir, "took", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// stop sends SIGTERM, then SIGKILL after 10 s.
func stop(log *slog.Logger, name string, pid int) {
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil || zombie(pid) {
			log.Info("stopped", "process", name, "pid", pid)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	log.Warn("killed", "process", name, "pid", pid)
}

// killContainers kills and deletes every container in the node's runc root.
func killContainers(log *slog.Logger, dir string) error {
	root := filepath.Join(dir, "containerd", "runc", "k8s.io")
	if _, err := os.Stat(root); err != nil {
		return nil
	}
	out, err := exec.Command("runc", "--root", root, "list", "-q").Output()
	if err != nil {
		return fmt.Errorf("runc list: %w", err)
	}
	ids := strings.Fields(string(out))
	for _, id := range ids {
		exec.Command("runc", "--root", root, "kill", "--all", id, "KILL").Run()
	}
	for _, id := range ids {
		exec.Command("runc", "--root", root, "delete", "--force", id).Run()
	}
	if len(ids) > 0 {
		log.Info("killed the node's containers", "count", len(ids))
	}
	return nil
}

// killShims kills the containerd shims serving our containerd socket.
func killShims(log *slog.Logger, sock string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	n := 0
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), "containerd-shim") || !strings.Contains(string(b), sock) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
			n++
		}
	}
	if n > 0 {
		log.Info("killed containerd shims", "count", n)
	}
}

// cleanIPTables removes every KUBE-* and CNI-* chain and the rules jumping
// to them, in IPv4 and IPv6. Only the local cluster makes such chains here.
func cleanIPTables(ctx context.Context, log *slog.Logger) error {
	var errs []error
	for _, tool := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(tool); err != nil {
			continue
		}
		for _, table := range []string{"filter", "nat", "mangle", "raw"} {
			out, err := exec.CommandContext(ctx, tool, "-w", "-t", table, "-S").Output()
			if err != nil {
				continue
			}
			var chains []string
			for line := range strings.SplitSeq(string(out), "\n") {
				f := strings.Fields(line)
				if len(f) >= 2 && f[0] == "-N" && ourChain(f[1]) {
					chains = append(chains, f[1])
				}
				if len(f) >= 2 && f[0] == "-A" && !ourChain(f[1]) && jumpsToOurs(f) {
					args := append([]string{"-w", "-t", table, "-D"}, f[1:]...)
					if out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput(); err != nil {
						errs = append(errs, fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, firstLine(out)))
					}
				}
			}
			for _, ch := range chains {
				exec.CommandContext(ctx, tool, "-w", "-t", table, "-F", ch).Run()
			}
			for _, ch := range chains {
				if out, err := exec.CommandContext(ctx, tool, "-w", "-t", table, "-X", ch).CombinedOutput(); err != nil {
					errs = append(errs, fmt.Errorf("%s -t %s -X %s: %w: %s", tool, table, ch, err, firstLine(out)))
				}
			}
			if len(chains) > 0 {
				log.Info("removed iptables chains", "tool", tool, "table", table, "chains", len(chains))
			}
		}
	}
	return errors.Join(errs...)
}

func ourChain(c string) bool { return strings.HasPrefix(c, "KUBE-") || strings.HasPrefix(c, "CNI-") }

func jumpsToOurs(f []string) bool {
	i := slices.Index(f, "-j")
	if i < 0 || i+1 >= len(f) {
		i = slices.Index(f, "-g")
	}
	return i >= 0 && i+1 < len(f) && ourChain(f[i+1])
}

// unmountUnder detaches every mount under dir (pod rootfs, shm, netns),
// deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			mp := unescape(fields[4])
			if strings.HasPrefix(mp, dir+"/") {
				mounts = append(mounts, mp)
			}
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

func unescape(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// removeCgroups removes the kubelet's kubepods cgroups (cgroupfs driver),
// leaves first; a cgroup still holding a process stays and is reported.
func removeCgroups(log *slog.Logger) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if _, err := os.Stat("/sys/fs/cgroup/kubepods"); err == nil {
		roots = append(roots, "/sys/fs/cgroup/kubepods")
	}
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := os.Remove(d); err != nil {
				log.Warn("cgroup left", "path", d, "err", err)
			}
		}
	}
}

package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// KillKubelet SIGKILLs the real node's kubelet of the cluster in dir, as a
// crash would, and returns its pid and a restart that starts it again with
// the same command line (its pid file and log as `cluster up` left them).
// The node's containers live on in containerd meanwhile; the restarted
// kubelet adopts them. Callers must restart, whatever happens in between: a
// cluster without its kubelet stops placing and probing pods.
func KillKubelet(ctx context.Context, dir string) (pid int, restart func(context.Context) (int, error), err error) {
	pid, err = readPid(filepath.Join(dir, "pids", pidOrder("kubelet")+".pid"))
	if err != nil {
		return 0, nil, fmt.Errorf("kill the kubelet: the cluster in %s has no real node: %w", dir, err)
	}
	if !ours(pid, dir) {
		return 0, nil, fmt.Errorf("kill the kubelet: pid %d is not the kubelet of the cluster in %s (not running)", pid, dir)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, nil, fmt.Errorf("kill the kubelet: read its command line: %w", err)
	}
	argv := splitCmdline(raw)
	if len(argv) == 0 || filepath.Base(argv[0]) != "kubelet" {
		return 0, nil, fmt.Errorf("kill the kubelet: pid %d runs %q, not the kubelet", pid, argv)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return 0, nil, fmt.Errorf("kill the kubelet (pid %d): %w", pid, err)
	}
	// Gone (or a zombie of a parent that does not reap it) before a new one
	// takes its port.
	for deadline := time.Now().Add(10 * time.Second); ours(pid, dir); {
		if time.Now().After(deadline) {
			return 0, nil, fmt.Errorf("kill the kubelet: pid %d still alive 10 s after SIGKILL", pid)
		}
		select {
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	restart = func(ctx context.Context) (int, error) {
		// The healthz port is free once the old process is gone; a
		// failed start is retried while the port lingers.
		var last error
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			npid, err := startDetached(dir, "kubelet", argv)
			if err != nil {
				return 0, err
			}
			if last = waitAlive(ctx, npid, dir, 2*time.Second); last == nil {
				return npid, nil
			}
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
		}
		return 0, fmt.Errorf("start the kubelet again: %w (see %s)", last, filepath.Join(dir, "logs", "kubelet.log"))
	}
	return pid, restart, nil
}

// waitAlive reports an error if pid exits within d.
func waitAlive(ctx context.Context, pid int, dir string, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		if !ours(pid, dir) {
			return errors.New("it exited at once")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// splitCmdline splits /proc/PID/cmdline's NUL-separated arguments.
func splitCmdline(b []byte) []string {
	var out []string
	for _, a := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}) {
		out = append(out, string(a))
	}
	return out
}

// Package owndata gives a service's data directory to the non-root user
// its image runs as. A PM that ran as root (before images ran as 65532), or
// a directory a node made as root (Kubernetes hostPath volumes, which
// fsGroup does not reach), holds files the non-root service cannot open.
// The images that keep per-user data carry an own-data subcommand that runs
// Chown once, as root with only CAP_CHOWN, before the service starts.
//
// They also carry wipe-data (Wipe), which empties a data directory: how a
// user's volume is erased where the router cannot reach the disk itself.
package owndata

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Command is the subcommand of the images that run Main.
const Command = "own-data"

// Chown makes everything under root (root included) owned by uid:gid,
// children before their directory, without following symbolic links. It
// needs no more than CAP_CHOWN: a directory it may not read is skipped when
// uid:gid owns it already (the service made it, and all in it), and an
// error otherwise. It reports how many entries it changed; nothing when
// everything is owned already.
func Chown(root string, uid, gid int) (int, error) {
	fi, err := os.Lstat(root)
	if err != nil {
		return 0, fmt.Errorf("own %s: %w", root, err)
	}
	return chown(root, fi, uid, gid)
}

func chown(path string, fi fs.FileInfo, uid, gid int) (int, error) {
	n := 0
	if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if errors.Is(err, fs.ErrPermission) && owned(fi, uid, gid) {
			return 0, nil
		}
		if err != nil {
			return n, fmt.Errorf("own %s: %w", path, err)
		}
		for _, e := range entries {
			p := filepath.Join(path, e.Name())
			ci, err := os.Lstat(p)
			if err != nil {
				return n, fmt.Errorf("own %s: %w", p, err)
			}
			k, err := chown(p, ci, uid, gid)
			n += k
			if err != nil {
				return n, err
			}
		}
	}
	if owned(fi, uid, gid) {
		return n, nil
	}
	if err := os.Lchown(path, uid, gid); err != nil {
		return n, fmt.Errorf("own %s: %w", path, err)
	}
	return n + 1, nil
}

func owned(fi fs.FileInfo, uid, gid int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == uid && int(st.Gid) == gid
}

// Main runs "own-data UID:GID DIR...": Chown of each DIR, reporting what it
// changed on out.
func Main(args []string, out func(string)) error {
	if len(args) < 2 {
		return errors.New(Command + ": usage: " + Command + " UID:GID DIR...")
	}
	uid, gid, err := parseIDs(args[0])
	if err != nil {
		return err
	}
	for _, dir := range args[1:] {
		n, err := Chown(dir, uid, gid)
		if err != nil {
			return fmt.Errorf("%s: %w", Command, err)
		}
		out(fmt.Sprintf("%s: %s owned by %d:%d (%d changed)", Command, dir, uid, gid, n))
	}
	return nil
}

func parseIDs(s string) (int, int, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			uid, err1 := strconv.Atoi(s[:i])
			gid, err2 := strconv.Atoi(s[i+1:])
			if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
				break
			}
			return uid, gid, nil
		}
	}
	return 0, 0, fmt.Errorf("%s: %q is not UID:GID", Command, s)
}

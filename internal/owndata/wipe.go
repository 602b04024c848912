package owndata

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WipeCommand is the subcommand of the images that run WipeMain: erasing a
// user's data on a volume the router cannot reach itself (a Kubernetes
// hostPath claim lives on its node's disk).
const WipeCommand = "wipe-data"

// Wipe removes everything under root, keeping root itself (it is a mount
// point), without following symbolic links (a link is removed, never what
// it names). It reports how many entries it removed, and fails unless root
// is left empty.
func Wipe(root string) (int, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return 0, fmt.Errorf("wipe %s: %w", root, err)
	}
	n := 0
	for _, e := range entries {
		p := filepath.Join(root, e.Name())
		// Count first: RemoveAll says nothing of what it removed.
		k := 0
		filepath.WalkDir(p, func(string, fs.DirEntry, error) error { k++; return nil })
		if err := os.RemoveAll(p); err != nil {
			return n, fmt.Errorf("wipe %s: %w", root, err)
		}
		n += k
	}
	if left, err := os.ReadDir(root); err != nil || len(left) > 0 {
		return n, fmt.Errorf("wipe %s: %d entries left (%v)", root, len(left), err)
	}
	return n, nil
}

// WipeMain runs "wipe-data DIR...": Wipe of each DIR, which must be an
// absolute path other than "/", reporting what it removed on out.
func WipeMain(args []string, out func(string)) error {
	if len(args) == 0 {
		return errors.New(WipeCommand + ": usage: " + WipeCommand + " DIR...")
	}
	for _, dir := range args {
		if !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
			return fmt.Errorf("%s: %q: want an absolute directory other than /", WipeCommand, dir)
		}
	}
	for _, dir := range args {
		n, err := Wipe(dir)
		if err != nil {
			return fmt.Errorf("%s: %w", WipeCommand, err)
		}
		out(fmt.Sprintf("%s: %s emptied (%d removed)", WipeCommand, dir, n))
	}
	return nil
}

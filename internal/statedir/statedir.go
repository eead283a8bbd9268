// Package statedir holds the permissions of everything labctl keeps in a
// lab's state directory. The database holds job files with boot passwords
// and the logs hold whatever the nodes print: nothing there is for other
// users of the host. Directories are DirMode, files FileMode; the group
// may read (an operator's group can look at logs), nobody else may.
package statedir

import (
	"io/fs"
	"os"
	"path/filepath"
)

// The modes of what labctl creates in a state directory.
const (
	DirMode  os.FileMode = 0o750
	FileMode os.FileMode = 0o640
)

// loose are the permission bits nothing in a state directory may have.
const loose os.FileMode = 0o027

// Change is one path whose mode Tighten changed.
type Change struct {
	Path     string
	From, To os.FileMode
}

// Tighten takes the loose bits (group write, anything for others) off dir
// and everything under it, without following symbolic links. It returns
// what it changed; an error stops it at the first path it cannot change.
func Tighten(dir string) ([]Change, error) {
	var changes []Change
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && path != dir {
				return nil // removed meanwhile
			}
			return err
		}
		if e.Type()&fs.ModeSymlink != 0 || (!e.IsDir() && !e.Type().IsRegular()) {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		perm := info.Mode().Perm()
		if perm&loose == 0 {
			return nil
		}
		to := perm &^ loose
		if err := os.Chmod(path, to); err != nil {
			return err
		}
		changes = append(changes, Change{Path: path, From: perm, To: to})
		return nil
	})
	return changes, err
}

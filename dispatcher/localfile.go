package dispatcher

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/labctl/labctl/jobs"
)

// A job's local files (its image and its sha256_file) are read on the
// dispatcher's host, by the daemon for people who may not read them
// themselves. They are opened once, when the job starts, and everything
// the job does with a file (sniffing its compression, counting its bytes,
// serving it to the node) uses that one descriptor, never the path again:
// a file swapped under the same name later is not what the node gets.
//
// Symbolic links are resolved once, when the job is accepted
// (ResolveFiles), and the run opens the resolved path without following
// a link in its last component: a file swapped for a link after the job
// was accepted is refused. A link in a directory of the path is still
// followed: it can only lead to a file that could have been named
// directly, and what decides whether a file may be served is checked on
// the open descriptor (a regular file and, for the daemon, one every user
// may read).

// ResolveFiles replaces the job's local image and sha256_file paths by
// their targets, every symbolic link resolved, so that the run opens them
// without following links (see OpenLocal). A path that does not resolve
// is left as it is, for OpenLocal to report.
func ResolveFiles(spec *jobs.Job) {
	resolve := func(p *string) {
		if *p == "" {
			return
		}
		if r, err := filepath.EvalSymlinks(*p); err == nil {
			*p = r
		}
	}
	if !spec.Deploy.ImageIsURL() {
		resolve(&spec.Deploy.Image)
	}
	resolve(&spec.Deploy.SHA256File)
	resolve(&spec.Boot.Kernel)
	resolve(&spec.Boot.Initrd)
	resolve(&spec.Boot.Root)
}

// CheckBootFiles checks a diskless job's kernel and initrd as the job will
// open them (OpenLocal), and that its root is a directory or a file it
// can open: what can be known before the job runs.
func CheckBootFiles(spec *jobs.Job, public bool) error {
	for _, f := range []struct{ key, path string }{{"boot.kernel", spec.Boot.Kernel}, {"boot.initrd", spec.Boot.Initrd}} {
		if f.path == "" {
			continue
		}
		fd, err := OpenLocal(f.key, f.path, public)
		if err != nil {
			return err
		}
		fd.Close()
	}
	if spec.Boot.Root == "" {
		return nil
	}
	if fi, err := os.Stat(spec.Boot.Root); err == nil && fi.IsDir() {
		return nil
	}
	fd, err := OpenLocal("boot.root", spec.Boot.Root, public)
	if err != nil {
		return err
	}
	return fd.Close()
}

// OpenLocal opens a job's local file (key names it in errors: deploy.image
// or deploy.sha256_file) for reading, without following a symbolic link
// in its last component and without blocking on a FIFO, and checks on
// the open descriptor that it is a regular file and, when public, that
// every user may read it (chmod o+r): the daemon serves files to nodes for
// people who may not read them themselves, so it only takes files anybody
// may read, never one such as /etc/shadow.
func OpenLocal(key, path string, public bool) (*os.File, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s: %s is a symbolic link (it is opened without following links: name the file itself)", key, path)
	}
	f, err := os.OpenFile(path, openLocalFlags, 0)
	if err != nil {
		if isSymlinkRefusal(err) {
			return nil, fmt.Errorf("%s: %s is a symbolic link (it is opened without following links: name the file itself)", key, path)
		}
		return nil, fmt.Errorf("%s: cannot read it: %w (local images are read on the host that runs labctl: use a path it can read, or an http(s) URL)", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %s is not a regular file", key, path)
	}
	if public && fi.Mode().Perm()&0o004 == 0 {
		f.Close()
		return nil, fmt.Errorf("%s: %s is not readable by every user (chmod o+r): the daemon serves it to a node, so it only takes files anybody may read", key, path)
	}
	return f, nil
}

// maxDigestFile is how much of a sha256_file is read: its first word is
// the digest.
const maxDigestFile = 4096

// Digest returns the job's expected sha256 of the written bytes: its
// sha256, or the first word of its sha256_file, read through OpenLocal.
func Digest(d jobs.Deploy, public bool) (string, error) {
	if d.SHA256File == "" {
		return d.SHA256, nil
	}
	f, err := OpenLocal("deploy.sha256_file", d.SHA256File, public)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDigestFile))
	if err != nil {
		return "", fmt.Errorf("read deploy.sha256_file: %w", err)
	}
	return jobs.ParseDigestFile(d.SHA256File, data)
}

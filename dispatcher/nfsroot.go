package dispatcher

import (
	"archive/tar"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Bounds of an unpacked diskless root: an archive that holds more is
// refused, and what was unpacked of it is removed.
const (
	MaxRootBytes   = 16 << 30 // the files' bytes, in all
	MaxRootEntries = 1 << 20  // files, directories and links
)

// exportRoot prepares the job's NFS root (see prepareRoot), exports it to
// the node until the job ends, and returns the kernel arguments that
// mount it: nfsroot=SERVER:/PATH,OPTIONS, the server's options first,
// then the device type's nfs.options, and the node's NFSv4 client
// identity (see nfsClientID).
func (r *runner) exportRoot(ctx context.Context) (string, error) {
	dir, err := prepareRoot(ctx, r.Spec.Boot.Root, r.CacheDir, r.Images.PublicFiles, r.event)
	if err != nil {
		return "", err
	}
	exp, err := r.Netboot.ExportRoot(ctx, dir)
	if err != nil {
		return "", fmt.Errorf("NFS export: %w", err)
	}
	r.event("boot: nfs: %s exported read-only as %s", dir, exp.Source())
	r.releases = append(r.releases, func() error {
		if err := exp.Withdraw(); err != nil {
			return fmt.Errorf("NFS export %s: withdraw: %w", exp.Source(), err)
		}
		r.event("finalize: NFS export %s withdrawn", exp.Source())
		return nil
	})
	opts := exp.Options()
	if o := r.set.NFS.Options; o != "" {
		opts = strings.Trim(opts+","+o, ",")
	}
	arg := "nfsroot=" + exp.Source()
	if opts != "" {
		arg += "," + opts
	}
	return arg + " nfs.nfs4_unique_id=" + nfsClientID(r.Device), nil
}

// nfsClientID is the NFSv4 client identity a node's kernel is given
// (nfs.nfs4_unique_id, at most 63 bytes): its device name. NFSv4 servers
// tell clients apart by an owner string the kernel makes from its host
// name, which nodes booting one root share until their init sets it
// (often "(none)"); behind a NAT they share an address too, and each
// one's EXCHANGE_ID then takes over the other's state, which fails its
// reads with EIO.
func nfsClientID(device string) string {
	id := "labctl." + device
	if len(id) > 63 {
		sum := sha256.Sum256([]byte(device))
		id = id[:46] + "." + hex.EncodeToString(sum[:8])
	}
	return id
}

// prepareRoot returns the directory to export for a job's boot.root: a
// directory as it is, or an archive unpacked once per sha256 into
// cacheDir/roots/SHA256 and shared, read-only, by every job that names
// the same bytes. Unpacking happens in a temporary directory beside it
// and is renamed into place only when whole: a failed unpack leaves
// nothing. Jobs unpacking the same archive at once wait for one another
// (a lock file per digest), so it is unpacked once.
func prepareRoot(ctx context.Context, root, cacheDir string, public bool, note func(string, ...any)) (string, error) {
	fi, err := os.Lstat(root)
	if err != nil {
		return "", fmt.Errorf("boot.root: %w", err)
	}
	if fi.IsDir() {
		if public && fi.Mode().Perm()&0o005 != 0o005 {
			return "", fmt.Errorf("boot.root: %s is not readable by every user (chmod o+rx): the daemon exports it to a node, so it only takes directories anybody may read", root)
		}
		note("boot: nfs: root %s (a directory, exported as it is)", root)
		return root, nil
	}
	f, err := OpenLocal("boot.root", root, public)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if cacheDir == "" {
		return "", errors.New("boot.root: an archive is unpacked into the cache directory, and this run has none")
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("boot.root: read %s: %w", root, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	roots := filepath.Join(cacheDir, "roots")
	// Only root may look inside: an archive's setuid files and owners are
	// kept for the node, not for the server's other users.
	if err := os.MkdirAll(roots, 0o700); err != nil {
		return "", fmt.Errorf("boot.root: %w", err)
	}
	final := filepath.Join(roots, sum)
	if _, err := os.Stat(final); err == nil {
		note("boot: nfs: root %s (sha256 %s) is unpacked already in %s: shared", root, sum, final)
		return final, nil
	}
	unlock, err := lockFile(ctx, final+".lock")
	if err != nil {
		return "", fmt.Errorf("boot.root: %w", err)
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		note("boot: nfs: root %s (sha256 %s) was unpacked by another job in %s: shared", root, sum, final)
		return final, nil
	}
	tmp, err := os.MkdirTemp(roots, ".unpack-"+sum[:16]+"-")
	if err != nil {
		return "", fmt.Errorf("boot.root: %w", err)
	}
	start := time.Now()
	st, err := unpackRoot(ctx, f, tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("boot.root %s: %w", root, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("boot.root: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("boot.root: %w", err)
	}
	skipped := ""
	if st.skipped > 0 {
		skipped = fmt.Sprintf(", %d device nodes, FIFOs or sockets left out (the node's /dev is devtmpfs)", st.skipped)
	}
	note("boot: nfs: root %s (%s, sha256 %s) unpacked into %s in %s: %d entries, %s%s",
		root, st.compression, sum, final, time.Since(start).Round(10*time.Millisecond), st.entries, sizeText(st.bytes), skipped)
	return final, nil
}

// unpackStats says what unpackRoot did.
type unpackStats struct {
	compression      Compression
	entries, skipped int
	bytes            int64
}

// unpackRoot unpacks a tar archive (plain, gzip, bzip2, xz or zstd) into
// dir through an os.Root, so that no entry, and no link an earlier entry
// made, leads out of dir. Regular files, directories, symbolic and hard
// links are made with their modes, owners (when running as root) and
// times; device nodes, FIFOs and sockets are left out. Names with ".."
// elements are refused; MaxRootBytes and MaxRootEntries bound it.
func unpackRoot(ctx context.Context, f *os.File, dir string) (unpackStats, error) {
	st := unpackStats{}
	comp, err := sniffImage(f)
	if err != nil {
		return st, err
	}
	st.compression = comp
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return st, err
	}
	in, wait, err := unpackReader(f, comp)
	if err != nil {
		return st, err
	}
	err = extractTar(ctx, in, dir, &st)
	if werr := wait(err); err == nil {
		err = werr
	}
	return st, err
}

// unpackReader returns the uncompressed bytes of f; wait ends the
// unpacking (after the reading ended with readErr) and reports its error.
func unpackReader(f *os.File, comp Compression) (io.Reader, func(readErr error) error, error) {
	switch comp {
	case None:
		return f, func(error) error { return nil }, nil
	case Gzip:
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func(error) error { return nil }, nil
	case Bzip2:
		return bzip2.NewReader(f), func(error) error { return nil }, nil
	}
	cmd := unpackCommand(comp)
	cmd.Stdin = f
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, commandError(cmd.Args[0], err)
	}
	return out, func(readErr error) error {
		if readErr != nil {
			cmd.Process.Kill()
		}
		if err := cmd.Wait(); err != nil && readErr == nil {
			return fmt.Errorf("unpack %s: %v: %s", comp, err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}, nil
}

// extractTar writes a tar stream's entries under dir.
func extractTar(ctx context.Context, in io.Reader, dir string, st *unpackStats) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	type dirMeta struct {
		name string
		hdr  *tar.Header
	}
	var dirs []dirMeta
	asRoot := os.Geteuid() == 0
	tr := tar.NewReader(in)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if st.entries == 0 {
				return fmt.Errorf("not a tar archive (%s): %v", compressionText(st.compression), err)
			}
			return fmt.Errorf("tar entry %d: %v", st.entries+1, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		st.entries++
		if st.entries > MaxRootEntries {
			return fmt.Errorf("more than %d entries: refused", MaxRootEntries)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "." {
			if hdr.Typeflag == tar.TypeDir {
				dirs = append(dirs, dirMeta{".", hdr})
			}
			continue
		}
		if parent := path.Dir(name); parent != "." {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
			dirs = append(dirs, dirMeta{name, hdr})
			continue
		case tar.TypeReg:
			if hdr.Size > MaxRootBytes-st.bytes {
				return fmt.Errorf("more than %s of files: refused", sizeText(MaxRootBytes))
			}
			if err := removeEntry(root, name); err != nil {
				return err
			}
			w, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
			n, err := io.Copy(w, tr)
			st.bytes += n
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			if hdr.Linkname == "" || strings.ContainsRune(hdr.Linkname, 0) {
				return fmt.Errorf("%s: bad link target %q", hdr.Name, hdr.Linkname)
			}
			if err := removeEntry(root, name); err != nil {
				return err
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		case tar.TypeLink:
			target, err := entryName(hdr.Linkname)
			if err != nil {
				return fmt.Errorf("%s: hard link: %w", hdr.Name, err)
			}
			if err := removeEntry(root, name); err != nil {
				return err
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("%s: hard link to %s: %w", hdr.Name, hdr.Linkname, err)
			}
			continue
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			st.skipped++
			continue
		case tar.TypeXGlobalHeader:
			continue
		default:
			return fmt.Errorf("%s: entry type %q is not supported", hdr.Name, hdr.Typeflag)
		}
		if asRoot {
			if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := setMeta(root, name, hdr); err != nil {
				return err
			}
		}
	}
	if st.entries == 0 {
		return fmt.Errorf("not a tar archive (%s): it holds no entries", compressionText(st.compression))
	}
	// Directories last, deepest first: their modes may forbid writing,
	// and writing into them moved their times.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if asRoot {
			if err := root.Lchown(d.name, d.hdr.Uid, d.hdr.Gid); err != nil {
				return fmt.Errorf("%s: %w", d.hdr.Name, err)
			}
		}
		if d.name != "." {
			if err := setMeta(root, d.name, d.hdr); err != nil {
				return err
			}
		}
	}
	return nil
}

// setMeta gives an unpacked file or directory its archive's mode (with
// setuid, setgid and sticky bits) and modification time.
func setMeta(root *os.Root, name string, hdr *tar.Header) error {
	mode := fs.FileMode(hdr.Mode).Perm()
	if hdr.Mode&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if hdr.Mode&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if hdr.Mode&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	if err := root.Chmod(name, mode); err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	return nil
}

// removeEntry removes what an earlier entry of the same name made (a
// later entry replaces it, as tar does); a directory stays.
func removeEntry(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if err != nil {
		return nil
	}
	if fi.IsDir() {
		return fmt.Errorf("%s: a directory of that name is in the archive already", name)
	}
	return root.Remove(name)
}

// entryName cleans an archive member's name to a path relative to the
// root ("." for the root itself): a leading "/" or "./" is dropped, and a
// name with a ".." element is refused, whatever it would resolve to.
func entryName(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("entry %q: NUL in its name", name)
	}
	for _, e := range strings.Split(name, "/") {
		if e == ".." {
			return "", fmt.Errorf("entry %q leaves the archive's root (..): refused", name)
		}
	}
	clean := path.Clean("/" + name)
	if clean == "/" {
		return ".", nil
	}
	return clean[1:], nil
}

// compressionText names an archive's packing for a message.
func compressionText(c Compression) string {
	if c == None {
		return "read as uncompressed"
	}
	return string(c) + " compressed"
}

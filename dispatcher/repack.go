package dispatcher

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/labctl/labctl/internal/statedir"
)

// repacked is a zstd copy of a job's image (see repack), open.
type repacked struct {
	File *os.File
	// SHA256 is the digest of File's bytes: what the node's stream hash
	// of them must show.
	SHA256 string
	// Made says this job made the copy (it was not in the cache).
	Made bool
}

// errNoRepack says why an image is served as it is although the device
// type asks for a repack; the job goes on without it.
var errNoRepack = errors.New("not repacked")

// repack returns the zstd copy of a gzip, bzip2 or xz image kept in
// cacheDir/repacked/KEY/SHA256/NAME.zst (KEY as cacheKey, SHA256 the
// digest of the copy's bytes, NAME the image's file name without its
// compression suffix), making it when it is not there: the image is
// unpacked here (gzip and bzip2 in Go, xz with the xz program), its
// uncompressed bytes checked against digest as they go by, and packed by
// the zstd program at level 3, in one thread, into a temporary directory
// renamed into place when whole. Jobs that need one image's copy at once
// wait for one another (a lock file per image), so it is made once. An
// error that wraps errNoRepack means the image is served as it is (no
// cache, no zstd program, or the host could not make the copy: a full
// disk); any other is the image's fault (it does not unpack, or not to
// the job's digest), which serving it as it is would not mend.
func repack(ctx context.Context, img imageFile, digest, cacheDir string) (repacked, error) {
	if cacheDir == "" {
		return repacked{}, fmt.Errorf("%w: the dispatcher has no cache directory to keep the copy in", errNoRepack)
	}
	if _, err := exec.LookPath("zstd"); err != nil {
		return repacked{}, fmt.Errorf("%w: the host that runs labctl has no zstd program (Debian package zstd)", errNoRepack)
	}
	fi, err := img.File.Stat()
	if err != nil {
		return repacked{}, fmt.Errorf("image: %w", err)
	}
	dir := filepath.Join(cacheDir, "repacked", cacheKey(fi, digest, img.Verified))
	if r, ok := cachedRepack(dir); ok {
		return r, nil
	}
	if err := os.MkdirAll(dir, statedir.DirMode); err != nil {
		return repacked{}, notMade(err)
	}
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return repacked{}, notMade(err)
	}
	defer unlock()
	if r, ok := cachedRepack(dir); ok {
		return r, nil
	}
	tmpDir, err := os.MkdirTemp(dir, ".repack-")
	if err != nil {
		return repacked{}, notMade(err)
	}
	defer os.RemoveAll(tmpDir)
	tmp, err := os.OpenFile(filepath.Join(tmpDir, zstdName(img.File.Name())), os.O_CREATE|os.O_EXCL|os.O_WRONLY, statedir.FileMode)
	if err != nil {
		return repacked{}, notMade(err)
	}
	defer tmp.Close()

	packed := sha256.New()
	// One thread: threads and zstd 1.5's asynchronous I/O each hold tens of
	// MiB of buffers (the program's peak RSS: 45-58 MB with them, 7.5 MB
	// without), and one thread packs 64 MiB in 0.1 s.
	zstd := exec.Command("zstd", "-q", "-3", "--single-thread", "-c")
	zstd.Stdout = io.MultiWriter(tmp, packed)
	var stderr strings.Builder
	zstd.Stderr = &stderr
	in, err := zstd.StdinPipe()
	if err != nil {
		return repacked{}, notMade(err)
	}
	if err := zstd.Start(); err != nil {
		return repacked{}, notMade(commandError("zstd", err))
	}
	v, err := newVerifier(img.Compression, in)
	if err != nil {
		in.Close()
		zstd.Wait()
		return repacked{}, fmt.Errorf("image %s: %w", img.File.Name(), err)
	}
	_, err = io.Copy(v, bufio.NewReaderSize(io.NewSectionReader(img.File, 0, fi.Size()), readBuffer))
	_, sum, verr := v.finish(err)
	in.Close()
	zerr := zstd.Wait()
	switch {
	case err != nil:
		return repacked{}, fmt.Errorf("image %s: %w", img.File.Name(), err)
	case verr != nil:
		return repacked{}, fmt.Errorf("image %s: %w", img.File.Name(), verr)
	case sum != digest:
		return repacked{}, fmt.Errorf("image %s: its uncompressed bytes have sha256 %s, the job expects %s", img.File.Name(), sum, digest)
	case zerr != nil:
		return repacked{}, notMade(fmt.Errorf("zstd: %v: %s", zerr, strings.TrimSpace(stderr.String())))
	}
	if err := tmp.Sync(); err != nil {
		return repacked{}, notMade(err)
	}
	packedSum := hex.EncodeToString(packed.Sum(nil))
	final := filepath.Join(dir, packedSum)
	if err := os.Rename(tmpDir, final); err != nil {
		return repacked{}, notMade(err)
	}
	f, err := os.Open(filepath.Join(final, filepath.Base(tmp.Name())))
	if err != nil {
		return repacked{}, notMade(err)
	}
	return repacked{File: f, SHA256: packedSum, Made: true}, nil
}

// zstdName is the copy's file name: the image's, its compression suffix
// replaced by .zst.
func zstdName(image string) string {
	name := filepath.Base(image)
	for _, suffix := range []string{".gz", ".xz", ".bz2"} {
		if n, ok := strings.CutSuffix(name, suffix); ok && n != "" {
			name = n
			break
		}
	}
	return name + ".zst"
}

// notMade says the copy could not be made on the host: the job goes on
// with the image as it is.
func notMade(err error) error {
	return fmt.Errorf("%w: the copy could not be made: %v", errNoRepack, err)
}

// cachedRepack opens the copy kept in dir, if there is one whose bytes
// still have the digest it is filed under: a copy damaged on the host's
// disk is removed (and made again) rather than failing every job that
// meets it. Hashing the copy costs the host a few milliseconds per 10 MB.
func cachedRepack(dir string) (repacked, bool) {
	names, _ := filepath.Glob(filepath.Join(dir, "*", "*.zst"))
	for _, name := range names {
		sum := filepath.Base(filepath.Dir(name))
		if !sha256Hex.MatchString(sum) {
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		h := sha256.New()
		_, err = io.Copy(h, bufio.NewReaderSize(f, readBuffer))
		if err == nil && hex.EncodeToString(h.Sum(nil)) == sum {
			if _, err = f.Seek(0, io.SeekStart); err == nil {
				return repacked{File: f, SHA256: sum}, true
			}
		}
		f.Close()
		os.RemoveAll(filepath.Dir(name))
	}
	return repacked{}, false
}

package dispatcher

import (
	"bufio"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/labctl/labctl/internal/statedir"
	"github.com/labctl/labctl/jobs"
)

// imageFile is a job's image open to serve to the node.
type imageFile struct {
	// File is the job's file, or the download of its URL in the cache,
	// open; the caller closes it. Everything the job does with the image
	// uses this descriptor.
	File        *os.File
	Compression Compression
	// RawSize is the number of uncompressed bytes the node writes: the
	// node hashes exactly that many bytes back from its disk.
	RawSize int64
	// Verified says that the file's uncompressed bytes were checked
	// against the job's digest (a download enters the cache only so).
	Verified bool
}

// prepareImage opens the job's image (downloading a URL into the cache
// once, see download; a local file through OpenLocal), tells its
// compression and counts its uncompressed bytes. digest, the sha256 of
// those bytes, keys the cache. cacheDir "" disables caching.
func prepareImage(ctx context.Context, image, digest, cacheDir string, pol ImagePolicy, note func(string, ...any)) (imageFile, error) {
	var f *os.File
	raw := int64(-1)
	if jobs.IsURL(image) {
		local, n, err := download(ctx, image, digest, cacheDir, pol, note)
		if err != nil {
			return imageFile{}, err
		}
		// The cache is the dispatcher's own: its files need not be public.
		if f, err = OpenLocal("deploy.image", local, false); err != nil {
			return imageFile{}, err
		}
		raw = n
	} else {
		var err error
		if f, err = OpenLocal("deploy.image", image, pol.PublicFiles); err != nil {
			return imageFile{}, err
		}
	}
	comp, err := sniffImage(f)
	if err == nil && raw < 0 {
		raw, err = rawSize(f, comp, digest, cacheDir, jobs.IsURL(image), note)
	}
	if err != nil {
		f.Close()
		return imageFile{}, err
	}
	return imageFile{File: f, Compression: comp, RawSize: raw, Verified: jobs.IsURL(image)}, nil
}

// streamDigest returns the sha256 that the node's hash of the bytes it
// receives must show: the job's digest for an uncompressed image, else the
// sha256 of the compressed file, once that file's uncompressed bytes have
// been checked against the job's digest here (unless a download did so).
// The result is kept in cacheDir/streams under the same key as the size.
func streamDigest(img imageFile, digest, cacheDir string) (string, error) {
	if img.Compression == None {
		return digest, nil
	}
	fi, err := img.File.Stat()
	if err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	var cached string
	if cacheDir != "" {
		cached = filepath.Join(cacheDir, "streams", cacheKey(fi, digest, img.Verified))
		if b, err := os.ReadFile(cached); err == nil {
			if sum := strings.TrimSpace(string(b)); sha256Hex.MatchString(sum) {
				return sum, nil
			}
		}
	}
	packed := sha256.New()
	w := io.Writer(packed)
	var v *verifier
	if !img.Verified {
		if v, err = newVerifier(img.Compression, nil); err != nil {
			return "", fmt.Errorf("image %s: %w", img.File.Name(), err)
		}
		w = io.MultiWriter(packed, v)
	}
	_, err = io.Copy(w, bufio.NewReaderSize(io.NewSectionReader(img.File, 0, fi.Size()), readBuffer))
	if v != nil {
		_, sum, verr := v.finish(err)
		switch {
		case verr != nil:
			return "", fmt.Errorf("image %s: %w", img.File.Name(), verr)
		case err == nil && sum != digest:
			return "", fmt.Errorf("image %s: its uncompressed bytes have sha256 %s, the job expects %s", img.File.Name(), sum, digest)
		}
	}
	if err != nil {
		return "", fmt.Errorf("image %s: %w", img.File.Name(), err)
	}
	sum := hex.EncodeToString(packed.Sum(nil))
	if cached != "" {
		if err := os.MkdirAll(filepath.Dir(cached), statedir.DirMode); err == nil {
			os.WriteFile(cached, []byte(sum+"\n"), statedir.FileMode)
		}
	}
	return sum, nil
}

// sha256Hex matches a sha256 in hex, as the cache keeps it.
var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// cacheKey names what the cache knows of an image file: a verified
// download by the digest alone; a local file, whose bytes nothing has
// checked against the digest, by the digest and that file's identity, so
// that a file claiming another's digest cannot set what another job reads.
func cacheKey(fi os.FileInfo, digest string, verified bool) string {
	if dev, ino, ok := fileID(fi); ok && !verified {
		return fmt.Sprintf("%s-%d-%d-%d-%d", digest, dev, ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return digest
}

// download fetches a URL image into the cache (cacheDir/downloads/DIGEST/
// NAME) unless it is there already, and returns its path and, when it
// downloaded it, the count of its uncompressed bytes (-1 from the cache).
//
// Only verified bytes enter the cache: the download goes to a temporary
// file next to its place, its uncompressed bytes are hashed as they
// arrive, and the file takes its place only when their sha256 is the
// job's digest. The download is refused beyond pol's size limit, and when
// the connection (or a redirect's) goes to an address pol does not allow
// (see ImagePolicy).
func download(ctx context.Context, image, digest, cacheDir string, pol ImagePolicy, note func(string, ...any)) (string, int64, error) {
	u, err := url.Parse(image)
	if err != nil {
		return "", 0, fmt.Errorf("image %s: %w", image, err)
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || name == "" {
		name = "image"
	}
	dir := cacheDir
	if dir == "" {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "downloads", digest)
	dst := filepath.Join(dir, name)
	if fi, err := os.Lstat(dst); err == nil && fi.Mode().IsRegular() {
		note("deploy: image %s from the cache (%s)", image, dst)
		return dst, -1, nil
	}
	if err := os.MkdirAll(dir, statedir.DirMode); err != nil {
		return "", 0, fmt.Errorf("image cache: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, image, nil)
	if err != nil {
		return "", 0, fmt.Errorf("image %s: %w", image, err)
	}
	client := pol.client()
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("download image: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("download image %s: %s", image, resp.Status)
	}
	limit := pol.maxDownload()
	tooLarge := fmt.Errorf("download image %s: larger than the limit of %s (lab setting [images] max_download_gib)", image, sizeText(limit))
	if resp.ContentLength > limit {
		return "", 0, tooLarge
	}
	tmp, err := os.CreateTemp(dir, name+".part-*")
	if err != nil {
		return "", 0, fmt.Errorf("image cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	body := bufio.NewReaderSize(io.LimitReader(resp.Body, limit+1), readBuffer)
	head, _ := body.Peek(16)
	v, err := newVerifier(DetectCompression(head), nil)
	if err != nil {
		return "", 0, fmt.Errorf("download image %s: %w", image, err)
	}
	n, err := io.Copy(io.MultiWriter(tmp, v), body)
	raw, sum, verr := v.finish(err)
	switch {
	case n > limit:
		return "", 0, tooLarge
	case err != nil && verr != nil:
		return "", 0, fmt.Errorf("download image %s: %w", image, verr)
	case err != nil:
		return "", 0, fmt.Errorf("download image %s: %w", image, err)
	case verr != nil:
		return "", 0, fmt.Errorf("download image %s: %w", image, verr)
	case sum != digest:
		return "", 0, fmt.Errorf("download image %s: its uncompressed bytes have sha256 %s, the job expects %s: not used, not cached", image, sum, digest)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("image cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", 0, fmt.Errorf("image cache: %w", err)
	}
	if cacheDir != "" {
		writeSize(filepath.Join(cacheDir, "sizes", digest), raw)
	}
	note("deploy: downloaded %s (%d bytes, sha256 verified) into the cache", image, n)
	return dst, raw, nil
}

// sizeText reads like "64 GiB" or "1536 MiB" or "4096 bytes".
func sizeText(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// verifier hashes the uncompressed bytes of an image written to it, and
// copies them to its unpacked writer if it has one.
type verifier struct {
	w    io.Writer // where the packed bytes go
	h    hash.Hash
	n    *countWriter
	wait func(copyErr error) error // ends the unpacking, nil without
}

func newVerifier(comp Compression, unpacked io.Writer) (*verifier, error) {
	v := &verifier{h: sha256.New()}
	v.n = &countWriter{w: v.h}
	if unpacked != nil {
		v.n.w = io.MultiWriter(v.h, unpacked)
	}
	switch comp {
	case None:
		v.w = v.n
	case Gzip, Bzip2:
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			var err error
			var r io.Reader
			if comp == Gzip {
				var zr *gzip.Reader
				if zr, err = gzip.NewReader(pr); err == nil {
					r = zr
				}
			} else {
				r = bzip2.NewReader(pr)
			}
			if err == nil {
				_, err = io.Copy(v.n, r)
			}
			if err != nil {
				err = fmt.Errorf("unpack %s: %w", comp, err)
			}
			pr.CloseWithError(err)
			done <- err
		}()
		v.w = pw
		v.wait = func(copyErr error) error {
			pw.CloseWithError(copyErr)
			return <-done
		}
	case XZ, Zstd:
		cmd := unpackCommand(comp)
		cmd.Stdout = v.n
		var stderr strings.Builder
		cmd.Stderr = &stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, commandError(cmd.Args[0], err)
		}
		v.w = in
		v.wait = func(error) error {
			in.Close()
			if err := cmd.Wait(); err != nil {
				return fmt.Errorf("unpack %s: %v: %s", comp, err, strings.TrimSpace(stderr.String()))
			}
			return nil
		}
	default:
		return nil, fmt.Errorf("unknown compression %q", comp)
	}
	return v, nil
}

func (v *verifier) Write(p []byte) (int, error) { return v.w.Write(p) }

// finish ends the unpacking after the copy into v ended with copyErr, and
// returns the count and sha256 (hex) of the uncompressed bytes.
func (v *verifier) finish(copyErr error) (int64, string, error) {
	var err error
	if v.wait != nil {
		err = v.wait(copyErr)
	}
	return v.n.n, hex.EncodeToString(v.h.Sum(nil)), err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// rawSize counts the uncompressed bytes of an image, remembering the count
// in cacheDir/sizes under cacheKey.
func rawSize(f *os.File, comp Compression, digest, cacheDir string, verified bool, note func(string, ...any)) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
	if comp == None {
		return fi.Size(), nil
	}
	var cached string
	if cacheDir != "" {
		cached = filepath.Join(cacheDir, "sizes", cacheKey(fi, digest, verified))
		if b, err := os.ReadFile(cached); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 {
				return n, nil
			}
		}
	}
	n, err := countUncompressed(f, fi.Size(), comp)
	if err != nil {
		return 0, fmt.Errorf("image %s: count its uncompressed bytes: %w", f.Name(), err)
	}
	note("deploy: the image holds %d bytes uncompressed", n)
	if cached != "" {
		writeSize(cached, n)
	}
	return n, nil
}

// writeSize records an image size in the cache, best effort.
func writeSize(file string, n int64) {
	if err := os.MkdirAll(filepath.Dir(file), statedir.DirMode); err == nil {
		os.WriteFile(file, []byte(strconv.FormatInt(n, 10)+"\n"), statedir.FileMode)
	}
}

// readBuffer is how much the readers of an image file or download
// buffer: the hash and the decompressors gain nothing from larger reads,
// and a larger buffer is resident memory of the `labctl run` that meets
// a new image.
const readBuffer = 64 << 10

// countUncompressed decompresses an image to count its bytes: gzip and
// bzip2 in Go; xz and zstd with the xz and zstd programs (Debian packages
// xz-utils and zstd), whose own listing gives the size without
// decompressing when the file records it. The programs read the open file
// (xz's listing as /dev/fd/3, unpacking on standard input), not its path.
func countUncompressed(f *os.File, size int64, comp Compression) (int64, error) {
	switch comp {
	case XZ:
		list := exec.Command("xz", "--robot", "--list", "/dev/fd/3")
		list.ExtraFiles = []*os.File{f}
		if out, err := list.Output(); err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				fields := strings.Split(line, "\t")
				if len(fields) > 4 && fields[0] == "totals" {
					if n, err := strconv.ParseInt(fields[4], 10, 64); err == nil {
						return n, nil
					}
				}
			}
		}
		return countCommand(f, comp)
	case Zstd:
		return countCommand(f, comp)
	}
	in := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), readBuffer)
	var r io.Reader
	switch comp {
	case Gzip:
		zr, err := gzip.NewReader(in)
		if err != nil {
			return 0, err
		}
		r = zr
	case Bzip2:
		r = bzip2.NewReader(in)
	default:
		return 0, fmt.Errorf("unknown compression %q", comp)
	}
	return io.Copy(io.Discard, r)
}

// unpackCommand is the host's command that unpacks an xz or zstd stream
// from its standard input.
func unpackCommand(comp Compression) *exec.Cmd {
	if comp == XZ {
		return exec.Command("xz", "-dc")
	}
	return exec.Command("zstd", "-dcq")
}

// commandError explains a command that did not start.
func commandError(name string, err error) error {
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("%s is needed on the host that runs labctl to check %s images (Debian package %s)", name, name, map[string]string{"xz": "xz-utils", "zstd": "zstd"}[name])
	}
	return err
}

// countCommand counts the bytes the xz or zstd program unpacks from f.
func countCommand(f *os.File, comp Compression) (int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	in, wait, err := unpackReader(f, comp)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(io.Discard, in)
	if werr := wait(err); err == nil {
		err = werr
	}
	return n, err
}

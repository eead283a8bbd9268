package dispatcher

import (
	"bufio"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/labctl/labctl/internal/statedir"
	"github.com/labctl/labctl/jobs"
)

// imageFile is a job's image ready to serve to the node.
type imageFile struct {
	// Path is the local file the boot server serves: the job's file, or
	// the download of its URL in the cache.
	Path        string
	Compression Compression
	// RawSize is the number of uncompressed bytes the node writes: the
	// node hashes exactly that many bytes back from its disk.
	RawSize int64
}

// prepareImage makes the job's image a local file (downloading a URL into
// the cache once), tells its compression and counts its uncompressed
// bytes. digest, the sha256 of those bytes, keys the cache: the same image
// is downloaded and counted once per cache. cacheDir "" disables caching.
func prepareImage(ctx context.Context, image, digest, cacheDir string, note func(string, ...any)) (imageFile, error) {
	local := image
	if jobs.IsURL(image) {
		var err error
		local, err = download(ctx, image, digest, cacheDir, note)
		if err != nil {
			return imageFile{}, err
		}
	}
	comp, err := sniffImage(local)
	if err != nil {
		return imageFile{}, err
	}
	size, err := rawSize(local, comp, digest, cacheDir, note)
	if err != nil {
		return imageFile{}, err
	}
	return imageFile{Path: local, Compression: comp, RawSize: size}, nil
}

// download fetches a URL image into the cache (cacheDir/images/DIGEST/NAME)
// unless it is there already, and returns the local path.
func download(ctx context.Context, image, digest, cacheDir string, note func(string, ...any)) (string, error) {
	u, err := url.Parse(image)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", image, err)
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || name == "" {
		name = "image"
	}
	dir := cacheDir
	if dir == "" {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "images", digest)
	dst := filepath.Join(dir, name)
	if _, err := os.Stat(dst); err == nil {
		note("deploy: image %s from the cache (%s)", image, dst)
		return dst, nil
	}
	if err := os.MkdirAll(dir, statedir.DirMode); err != nil {
		return "", fmt.Errorf("image cache: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, image, nil)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", image, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("download image: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("download image %s: %s", image, resp.Status)
	}
	tmp, err := os.CreateTemp(dir, name+".part-*")
	if err != nil {
		return "", fmt.Errorf("image cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, resp.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("download image %s: %w", image, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("image cache: %w", err)
	}
	note("deploy: downloaded %s (%d bytes) into the cache", image, n)
	return dst, nil
}

// rawSize counts the uncompressed bytes of an image, remembering the count
// in cacheDir/sizes/DIGEST.
func rawSize(file string, comp Compression, digest, cacheDir string, note func(string, ...any)) (int64, error) {
	if comp == None {
		fi, err := os.Stat(file)
		if err != nil {
			return 0, fmt.Errorf("image: %w", err)
		}
		return fi.Size(), nil
	}
	var cached string
	if cacheDir != "" {
		cached = filepath.Join(cacheDir, "sizes", digest)
		if b, err := os.ReadFile(cached); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 {
				return n, nil
			}
		}
	}
	n, err := countUncompressed(file, comp)
	if err != nil {
		return 0, fmt.Errorf("image %s: count its uncompressed bytes: %w", file, err)
	}
	note("deploy: the image holds %d bytes uncompressed", n)
	if cached != "" {
		if err := os.MkdirAll(filepath.Dir(cached), statedir.DirMode); err == nil {
			os.WriteFile(cached, []byte(strconv.FormatInt(n, 10)+"\n"), statedir.FileMode)
		}
	}
	return n, nil
}

// countUncompressed decompresses an image to count its bytes: gzip and
// bzip2 in Go; xz and zstd with the xz and zstd programs (Debian packages
// xz-utils and zstd), whose own listing gives the size without
// decompressing when the file records it.
func countUncompressed(file string, comp Compression) (int64, error) {
	switch comp {
	case XZ:
		if out, err := exec.Command("xz", "--robot", "--list", file).Output(); err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				f := strings.Split(line, "\t")
				if len(f) > 4 && f[0] == "totals" {
					if n, err := strconv.ParseInt(f[4], 10, 64); err == nil {
						return n, nil
					}
				}
			}
		}
		return countCommand("xz", "-dc", file)
	case Zstd:
		return countCommand("zstd", "-dcq", file)
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var r io.Reader
	switch comp {
	case Gzip:
		zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			return 0, err
		}
		r = zr
	case Bzip2:
		r = bzip2.NewReader(bufio.NewReaderSize(f, 1<<20))
	default:
		return 0, fmt.Errorf("unknown compression %q", comp)
	}
	return io.Copy(io.Discard, r)
}

func countCommand(name string, args ...string) (int64, error) {
	cmd := exec.Command(name, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return 0, fmt.Errorf("%s is needed on the host that runs labctl to check %s images (Debian package %s)", name, name, map[string]string{"xz": "xz-utils", "zstd": "zstd"}[name])
		}
		return 0, err
	}
	n, cerr := io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return n, cerr
}

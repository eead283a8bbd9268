package dispatcher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/labctl/labctl/dispatcher/dispatchertest"
)

// Without a cache directory, a zstd program or a cache it can write the
// image is served as it is, and the reason says which.
func TestRepackUnavailable(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := imageFile{File: f, Compression: Gzip}
	if _, err := repack(context.Background(), img, "", ""); !errors.Is(err, errNoRepack) {
		t.Errorf("no cache directory: %v", err)
	}
	// A cache the host cannot write (here a file where the directory
	// should be) is no reason to fail the job.
	notDir := filepath.Join(t.TempDir(), "cache")
	os.WriteFile(notDir, nil, 0o600)
	if _, err := repack(context.Background(), img, "", notDir); !errors.Is(err, errNoRepack) {
		t.Errorf("cache not writable: %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := repack(context.Background(), img, "", t.TempDir()); !errors.Is(err, errNoRepack) {
		t.Errorf("no zstd program: %v", err)
	}
}

// Jobs that need one image's copy at once make it once: the others wait
// and take it from the cache, and all get the same bytes.
func TestRepackOnceForJobsAtOnce(t *testing.T) {
	path, digest := dispatchertest.GzipImage(t, t.TempDir(), bytes.Repeat([]byte("labctl repack "), 1<<16))
	cache := t.TempDir()
	var wg sync.WaitGroup
	got := make([]repacked, 4)
	errs := make([]error, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(path)
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Close()
			got[i], errs[i] = repack(context.Background(), imageFile{File: f, Compression: Gzip}, digest, cache)
		}()
	}
	wg.Wait()
	made := 0
	for i, r := range got {
		if errs[i] != nil {
			t.Fatalf("job %d: %v", i, errs[i])
		}
		defer r.File.Close()
		if r.Made {
			made++
		}
		if r.SHA256 != got[0].SHA256 || filepath.Base(r.File.Name()) != "disk.img.zst" {
			t.Errorf("job %d: copy %s sha256 %s, job 0's %s", i, r.File.Name(), r.SHA256, got[0].SHA256)
		}
	}
	if made != 1 {
		t.Errorf("%d jobs made the copy, want 1", made)
	}
	if left, _ := filepath.Glob(filepath.Join(cache, "repacked", "*", ".repack-*")); len(left) != 0 {
		t.Errorf("temporary copies left: %v", left)
	}
}

// An xz or bzip2 image is repacked as a gzip one is: the copy unpacks to
// the image's bytes; a zstd image needs no copy.
func TestRepackFormats(t *testing.T) {
	raw := bytes.Repeat([]byte("labctl repack formats "), 1<<14)
	sum := sha256.Sum256(raw)
	digest := hex.EncodeToString(sum[:])
	for _, tt := range []struct {
		comp Compression
		pack []string
	}{{XZ, []string{"xz", "-c"}}, {Bzip2, []string{"bzip2", "-c"}}} {
		t.Run(string(tt.comp), func(t *testing.T) {
			if _, err := exec.LookPath(tt.pack[0]); err != nil {
				t.Skipf("no %s: %v", tt.pack[0], err)
			}
			cmd := exec.Command(tt.pack[0], tt.pack[1:]...)
			cmd.Stdin = bytes.NewReader(raw)
			packed, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "disk.img."+map[Compression]string{XZ: "xz", Bzip2: "bz2"}[tt.comp])
			if err := os.WriteFile(path, packed, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			comp, err := sniffImage(f)
			if err != nil || comp != tt.comp {
				t.Fatalf("sniffed %s, %v", comp, err)
			}
			r, err := repack(context.Background(), imageFile{File: f, Compression: comp}, digest, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer r.File.Close()
			if filepath.Base(r.File.Name()) != "disk.img.zst" {
				t.Errorf("copy named %s", r.File.Name())
			}
			out, err := exec.Command("zstd", "-dcq", r.File.Name()).Output()
			if err != nil || !bytes.Equal(out, raw) {
				t.Errorf("the copy unpacks to %d bytes (%v), want the image's %d", len(out), err, len(raw))
			}
		})
	}
}

// A copy damaged in the cache is not served: it is made again.
func TestRepackDamagedCopyMadeAgain(t *testing.T) {
	path, digest := dispatchertest.GzipImage(t, t.TempDir(), bytes.Repeat([]byte("labctl damaged copy "), 1<<14))
	cache := t.TempDir()
	get := func() repacked {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r, err := repack(context.Background(), imageFile{File: f, Compression: Gzip}, digest, cache)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.File.Close() })
		return r
	}
	first := get()
	if err := os.WriteFile(first.File.Name(), []byte("damaged"), 0o640); err != nil {
		t.Fatal(err)
	}
	again := get()
	if !again.Made || again.SHA256 != first.SHA256 {
		t.Errorf("after damage: made %v, sha256 %s (first %s)", again.Made, again.SHA256, first.SHA256)
	}
	if b, _ := os.ReadFile(again.File.Name()); bytes.Equal(b, []byte("damaged")) {
		t.Error("the damaged copy is still in the cache")
	}
}

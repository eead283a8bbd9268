package dispatcher

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Without a cache directory or a zstd program the image is served as it
// is, and the reason says which.
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
	t.Setenv("PATH", t.TempDir())
	if _, err := repack(context.Background(), img, "", t.TempDir()); !errors.Is(err, errNoRepack) {
		t.Errorf("no zstd program: %v", err)
	}
}

// Jobs that need one image's copy at once make it once: the others wait
// and take it from the cache, and all get the same bytes.
func TestRepackOnceForJobsAtOnce(t *testing.T) {
	raw := bytes.Repeat([]byte("labctl repack "), 1<<16)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	path := filepath.Join(t.TempDir(), "disk.img.gz")
	if err := os.WriteFile(path, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
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
			got[i], errs[i] = repack(context.Background(), imageFile{File: f, Compression: Gzip}, hex.EncodeToString(sum[:]), cache)
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

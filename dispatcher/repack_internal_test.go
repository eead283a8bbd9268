package dispatcher

import (
	"errors"
	"os"
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
	if _, err := repack(img, "", ""); !errors.Is(err, errNoRepack) {
		t.Errorf("no cache directory: %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := repack(img, "", t.TempDir()); !errors.Is(err, errNoRepack) {
		t.Errorf("no zstd program: %v", err)
	}
}

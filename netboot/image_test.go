package netboot

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// publishFile opens path and publishes it; the file stays open until the
// test ends.
func publishFile(t *testing.T, s *testServer, path string) *Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	im, err := s.PublishImage(f)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// An image serves the file it was published from, whatever its path names
// later: a file swapped under the same name (for a private file, or a link
// to one) is not what the node gets.
func TestImageServesItsDescriptor(t *testing.T) {
	ts := startServer(t, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	data := randomBytes(t, 3<<20+5)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	im := publishFile(t, ts, path)
	defer im.Close()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("root-only secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, path); err != nil {
		t.Fatal(err)
	}
	for range 2 { // one after the other: each request reads from the start
		status, body := httpGet(t, im.URL())
		if status != http.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("GET after the swap: status %d, %d bytes (%q...), want the published %d bytes", status, len(body), body[:min(len(body), 20)], len(data))
		}
	}
	status, body := httpGet(t, im.URL(), "Range", "bytes=10-19")
	if status != http.StatusPartialContent || !bytes.Equal(body, data[10:20]) {
		t.Fatalf("range after the swap: status %d, %q", status, body)
	}
}

// The fallback reader (no /proc) serves the same bytes and stops at Close.
func TestImageSectionReader(t *testing.T) {
	ts := startServer(t, nil)
	path := filepath.Join(t.TempDir(), "disk.img")
	data := randomBytes(t, 1<<20)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	im := publishFile(t, ts, path)
	r := lockedReaderAt{im}
	buf := make([]byte, 100)
	if n, err := r.ReadAt(buf, 1000); err != nil || n != 100 || !bytes.Equal(buf, data[1000:1100]) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	im.Close()
	if _, err := r.ReadAt(buf, 0); err != errClosed {
		t.Fatalf("ReadAt after Close = %v, want errClosed", err)
	}
	if _, _, err := im.open(); err != errClosed {
		t.Fatalf("open after Close = %v, want errClosed", err)
	}
}

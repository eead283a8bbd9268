package simlabtest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// TestDiskSHA256: the digest is the whole file's, and only the 4 KiB
// blocks holding data count as used, the short last block included.
func TestDiskSHA256(t *testing.T) {
	data := make([]byte, 5*4096+100)
	data[4096+7] = 1   // block 1
	data[5*4096+3] = 2 // the short last block
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum, used := DiskSHA256(t, path)
	want := sha256.Sum256(data)
	if sum != hex.EncodeToString(want[:]) {
		t.Errorf("sha256 %s, want %x", sum, want)
	}
	if used != 4096+100 {
		t.Errorf("used %d bytes, want %d", used, 4096+100)
	}
}

package fakeos

import (
	"os"
	"path/filepath"
	"testing"
)

func TestBootable(t *testing.T) {
	dir := t.TempDir()
	signed := make([]byte, 4096)
	MarkBootable(signed)
	for _, c := range []struct {
		name string
		disk []byte // nil: no file
		want bool
	}{
		{"missing", nil, false},
		{"empty", []byte{}, false},
		{"short", signed[:511], false},
		{"unsigned", make([]byte, 512), false},
		{"signed sector", signed[:512], true},
		{"signed image", signed, true},
	} {
		p := filepath.Join(dir, c.name)
		if c.disk != nil {
			if err := os.WriteFile(p, c.disk, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := Bootable(p); got != c.want {
			t.Errorf("%s: Bootable = %v, want %v", c.name, got, c.want)
		}
	}
}

package main

import (
	"strings"
	"testing"
)

// labctl save checks --output before it contacts anything: through the
// daemon a file name only, always NAME.img.zst.
func TestSaveOutputRules(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"save", "node1", "--output", "/srv/x.img.zst"}, "through the daemon --output is a file name"},
		{[]string{"save", "node1", "--output", "x.img.gz"}, "ending in .img.zst"},
		{[]string{"save", "node1", "--output", "x.img.zst", "--disk", "sda"}, "save.disk"},
		{[]string{"save", "--output", "x.img.zst"}, "want one NODE"},
	} {
		code, _, stderr := runLabctl(t, nil, c.args...)
		if code != 64 || !strings.Contains(stderr, c.want) {
			t.Errorf("labctl %s: exit %d, %q; want 64 and %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
	}
}

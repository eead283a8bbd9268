package jobs

import (
	"strings"
	"testing"
)

// Job files: a diskless job takes no [deploy] and needs its kernel,
// initrd (and root for nfs); a disk job takes none of them.
func TestParseBootMethod(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"device = \"n\"\n[boot]\nmethod = \"ramdisk\"\nkernel = \"k\"\n", "boot.initrd: required"},
		{"device = \"n\"\n[boot]\nmethod = \"nfs\"\nkernel = \"k\"\ninitrd = \"i\"\n", "boot.root: required"},
		{"device = \"n\"\n[deploy]\nimage = \"a\"\nsha256_file = \"b\"\n[boot]\nmethod = \"ramdisk\"\nkernel = \"k\"\ninitrd = \"i\"\n", "remove [deploy]"},
		{"device = \"n\"\n[deploy]\nimage = \"a\"\nsha256_file = \"b\"\n[boot]\nroot = \"r\"\n", "boot.root: only for boot.method = \"nfs\""},
		{"device = \"n\"\n[boot]\nmethod = \"floppy\"\n", "use disk (the default), ramdisk or nfs"},
		{"device = \"n\"\n[boot]\nmethod = \"nfs\"\nkernel = \"k\"\ninitrd = \"i\"\nroot = \"http://x/r.tar\"\n", "give a path on this host"},
		{"device = \"n\"\n[boot]\nmethod = \"ramdisk\"\nkernel = \"k\"\ninitrd = \"i\"\nappend = \"nfsroot=1.2.3.4:/x\"\n", "without nfsroot="},
		{"device = \"n\"\n[boot]\nmethod = \"ramdisk\"\nkernel = \"k\"\ninitrd = \"i\"\n[save]\noutput = \"x.img.zst\"\n", "leaves the disk untouched"},
	} {
		_, err := Parse("job.toml", []byte(tc.text), "/jobs")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
	j, err := Parse("job.toml", []byte("device = \"n\"\n[boot]\nmethod = \"nfs\"\nkernel = \"k\"\ninitrd = \"i\"\nroot = \"r.tar.zst\"\n"), "/jobs")
	if err != nil || j.Boot.Root != "/jobs/r.tar.zst" || j.Boot.Kernel != "/jobs/k" || j.HasDeploy() {
		t.Errorf("parse: %v %+v", err, j)
	}
}

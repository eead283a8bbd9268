package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestScaleLabDiskWrapper checks the one thing in the scale case's lab that
// could do harm: the fake nodes' dd must write the node's disk.img, never
// the device path the dispatcher names.
func TestScaleLabDiskWrapper(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("SKIP: busybox not installed (busybox-static)")
	}
	dir := t.TempDir()
	c := ScaleCase{Nodes: 2, Jobs: 2, ImageSize: 4096}
	job, labs, err := c.writeLab(dir, busybox)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(job, "device_type = \"fake-node\"") || len(labs) != 1 || labs[0] != filepath.Join(dir, "lab.toml") {
		t.Fatalf("job %q labs %q", job, labs)
	}
	disk := filepath.Join(dir, "nodes", "node001", "disk.img")
	os.MkdirAll(filepath.Dir(disk), 0o755) // the farm makes each node's directory
	img := filepath.Join(dir, "disk.img")
	cmd := exec.Command("/bin/bash", "-c", "set -o pipefail; cat "+img+" | dd of="+FakeDisk+" bs=4M && sync && dd if="+FakeDisk+" bs=4M count=4096 iflag=count_bytes | sha256sum")
	cmd.Env = []string{"PATH=" + filepath.Join(dir, "nodes", "bin"), "FAKE_DISK=" + disk}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want, _ := os.ReadFile(img)
	got, _ := os.ReadFile(disk)
	if !bytes.Equal(got, want) || len(got) != 4096 || got[510] != 0x55 || got[511] != 0xaa {
		t.Fatalf("disk.img holds %d bytes, want the 4096-byte image with a boot signature", len(got))
	}
	if _, err := os.Stat(FakeDisk); err == nil {
		t.Fatalf("%s exists", FakeDisk)
	}
	// Without the wrapper's variable, dd fails instead of writing /dev.
	cmd = exec.Command("/bin/bash", "-c", "echo x | dd of="+FakeDisk)
	cmd.Env = []string{"PATH=" + filepath.Join(dir, "nodes", "bin")}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("dd without FAKE_DISK succeeded: %s", out)
	}
}

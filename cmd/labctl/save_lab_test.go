package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

// TestLabSave: on QEMU nodes with the real master (busybox dd, zstd, nc),
// a job deploys the test image, changes the disk in a test step and saves
// it; a job on another node deploys the saved image and finds the change,
// its disk then byte for byte the first node's; the image is about the
// size of the data on the sparse disk. Then labctl save on the first node
// has its upload connection killed mid-stream (ss -K): the save ends
// incomplete naming the cut, nothing is left, the node is off.
func TestLabSave(t *testing.T) {
	lab := simlabtest.StartLab(t, 2, simlab.Options{})
	cfg, err := devices.Load(lab.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	saveDir := cfg.Images.SaveDir
	n1, n2 := lab.Nodes[0], lab.Nodes[1]
	img := lab.Artifacts.Images.Raw
	// 100 MiB in: past the 64 MiB image, where the 128 MiB disk is a hole.
	const marker = "labctl-save-marker"
	job1 := writeJobFile(t, "change", fmt.Sprintf(`device = %q
[deploy]
image = %q
sha256 = %q
[boot]
password = "test"
[[test]]
name = "change"
commands = ["printf %s | dd of=/dev/vda bs=1M seek=100 conv=notrunc"]
[save]
output = "changed.img.zst"
`, n1.Name, img.Path+".zst", img.SHA256, marker))
	res, log, err := runLabJob(t, lab, job1, t.TempDir())
	wantExit(t, err, 0)
	out := filepath.Join(saveDir, "changed.img.zst")
	if res.Outcome != "complete" || res.Saved != out {
		t.Fatalf("save job: %s (%s), saved %q", res.Outcome, res.Reason, res.Saved)
	}
	wantOff(t, n1)
	diskSum, used := simlabtest.DiskSHA256(t, filepath.Join(n1.Dir, "disk.img"))
	digest, err := os.ReadFile(filepath.Join(saveDir, "changed.img.sha256"))
	if err != nil || string(digest) != diskSum+"  changed.img\n" {
		t.Errorf("digest file %q (%v), want node1's disk %s", digest, err, diskSum)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("disk 128 MiB, %d bytes in use, saved image %d bytes", used, st.Size())
	if st.Size() > used+1<<20 {
		t.Errorf("saved image %d bytes, the disk holds %d bytes of data: zeros should cost nothing", st.Size(), used)
	}
	if !strings.Contains(log, "********") {
		t.Errorf("the save token was not typed as a secret")
	}

	job2 := writeJobFile(t, "find", fmt.Sprintf(`device = %q
[deploy]
image = %q
sha256_file = %q
[boot]
password = "test"
[[test]]
name = "find"
commands = ["dd if=/dev/vda bs=1M skip=100 count=1 2>/dev/null | head -c %d"]
`, n2.Name, out, filepath.Join(saveDir, "changed.img.sha256"), len(marker)))
	res, _, err = runLabJob(t, lab, job2, t.TempDir())
	wantExit(t, err, 0)
	if res.Outcome != "complete" || !strings.Contains(res.Steps[0].Output, marker) {
		t.Fatalf("deploy of the saved image: %s (%s), step output %q", res.Outcome, res.Reason, res.Steps[0].Output)
	}
	if sum, _ := simlabtest.DiskSHA256(t, filepath.Join(n2.Dir, "disk.img")); sum != diskSum {
		t.Errorf("node2's disk sha256 %s, node1's %s", sum, diskSum)
	}

	// The cut: kill the upload's connections once its bytes arrive.
	_, httpPort, _ := net.SplitHostPort(lab.BootServer.HTTPAddr)
	stop := make(chan struct{})
	killed := make(chan string, 1)
	go func() {
		for {
			select {
			case <-stop:
				killed <- ""
				return
			case <-time.After(20 * time.Millisecond):
			}
			tmps, _ := filepath.Glob(filepath.Join(saveDir, ".save-*.tmp"))
			if len(tmps) == 0 {
				continue
			}
			if st, err := os.Stat(tmps[0]); err != nil || st.Size() < 64<<10 {
				continue
			}
			cmd := exec.Command("ss", "-K", "-t", "state", "established", fmt.Sprintf("( sport = :%s or dport = :%s )", httpPort, httpPort))
			b, err := cmd.CombinedOutput()
			killed <- fmt.Sprintf("ss -K: %v: %s", err, b)
			return
		}
	}()
	env, stdout, stderr := envWith(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	err = runSave(ctx, saveOptions{lab: lab.ConfigPath, node: n1.Name, output: filepath.Join(saveDir, "cut.img.zst")}, env)
	close(stop)
	t.Logf("labctl save: %v\n%s%s\n%s", err, stdout, stderr, <-killed)
	wantExit(t, err, 2)
	if !strings.Contains(stdout.String(), "save: send the disk") || !strings.Contains(stdout.String(), "cut") {
		t.Errorf("the summary does not say the upload was cut:\n%s", stdout)
	}
	left, _ := filepath.Glob(filepath.Join(saveDir, "*cut*"))
	tmps, _ := filepath.Glob(filepath.Join(saveDir, ".save-*"))
	if len(left)+len(tmps) != 0 {
		t.Errorf("left in the save directory: %v %v", left, tmps)
	}
	wantOff(t, n1)
}

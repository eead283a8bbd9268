package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

// disklessJob writes a diskless job file for node and returns its path.
func disklessJob(t *testing.T, art, name, node, method, root, steps string) string {
	t.Helper()
	rootLine := ""
	if root != "" {
		rootLine = fmt.Sprintf("root = %q\n", root)
	}
	initrd := "testos.gz"
	if method == "nfs" {
		initrd = "nfsroot.gz"
	}
	return writeJobFile(t, name, fmt.Sprintf(`name = %q
device = %q
[boot]
method = %q
kernel = %q
initrd = %q
%spassword = "test"
`, name, node, method, filepath.Join(art, "vmlinuz"), filepath.Join(art, initrd), rootLine)+steps)
}

var exportedAs = regexp.MustCompile(`exported read-only as \S+:(/labctl/[0-9a-f]+)`)

// Diskless boots through labctl serve, on two simlab nodes and a real
// nfs-ganesha (userspace: this machine's kernel has no nfsd):
//   - two nfs jobs at once on the same root archive: both complete, the
//     archive is unpacked once and both nodes mount that copy through one
//     export (nfs-ganesha wants each path exported once), each as an
//     NFSv4 client of its own (behind simlab's NAT both come from one
//     address with one host name); the root is
//     NFSv4, read-only, under an overlay whose writes land in tmpfs; the
//     nodes' disks hold the same bytes after as before; the export is
//     gone from the server once both jobs ended;
//   - a ramdisk job completes with no network file system mounted;
//   - a root that is not an archive, and the NFS server stopped: each job
//     ends incomplete naming what failed, nothing half-unpacked, the node
//     off.
func TestLabDiskless(t *testing.T) {
	t.Parallel()
	lab := simlabtest.StartLab(t, 2, simlab.Options{NFS: true})
	t.Cleanup(func() { killStrays(lab) })
	srv := lab.NFS
	art := filepath.Join(lab.Artifacts.Dir, "diskless")
	if _, err := os.Stat(filepath.Join(art, "root.tar.zst")); err != nil {
		simlabtest.SkipOrFail(t, fmt.Errorf("diskless artifacts missing (make diskless): %v", err))
	}

	bin := labctlBinary(t)
	_, client := labAdminClient(t, lab)
	startServeProc(t, bin, lab.ConfigPath, client)
	start := time.Now()
	step := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }
	for _, n := range lab.Nodes {
		waitLabDevice(t, client, n.Name, labctl.DeviceIdle, 2*time.Minute)
	}
	disks := map[string]string{}
	for _, n := range lab.Nodes {
		disks[n.Name], _ = simlabtest.DiskSHA256(t, filepath.Join(n.Dir, "disk.img"))
	}
	submit := func(path string) int64 {
		t.Helper()
		text, _ := os.ReadFile(path)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		j, err := client.Submit(ctx, labctl.SubmitRequest{File: path, Dir: filepath.Dir(path), Spec: string(text)})
		if err != nil {
			t.Fatalf("submit %s: %v", path, err)
		}
		return j.ID
	}
	finished := func(id int64) labctl.Job {
		return waitJob(t, client, id, "finished", 8*time.Minute, func(j labctl.Job) bool { return j.State == labctl.JobFinished })
	}
	jobLog := func(id int64) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rc, err := client.JobLog(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return string(b)
	}
	root := filepath.Join(art, "root.tar.zst")

	nfsSteps := `
[[test]]
name = "root-is-nfs"
commands = ["mount | grep ' on /run/nfsroot/ro type nfs4 (ro'", "mount | grep '^overlay on / type overlay'", "grep /run/nfsroot/ro /proc/mounts | grep -q acregmin=3600"]
[[test]]
name = "writes-in-tmpfs"
commands = ["echo diskless > /etc/written", "grep -q diskless /run/nfsroot/upper/etc/written", "grep -q '^tmpfs /run/nfsroot tmpfs' /proc/mounts", "! test -e /run/nfsroot/ro/etc/written", "! touch /run/nfsroot/ro/probe"]
`
	var ids []int64
	for i, n := range lab.Nodes {
		ids = append(ids, submit(disklessJob(t, art, fmt.Sprintf("nfs-%d", i), n.Name, "nfs", root, nfsSteps+fmt.Sprintf(`
[[test]]
name = "own-nfs-identity"
commands = ["grep -qx labctl.%s /sys/module/nfs/parameters/nfs4_unique_id"]
`, n.Name))))
	}
	var logs string
	var exported []string
	for _, id := range ids {
		j := finished(id)
		log := jobLog(id)
		logs += log
		if j.Outcome != "complete" {
			t.Errorf("nfs job %d on %s: %s: %s\n%s", id, j.Device, j.Outcome, j.Reason, tail(log, 60))
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "boot: nfs:") || strings.Contains(l, "logged in as") || strings.Contains(l, "withdrawn") || strings.Contains(l, "# test ") {
				t.Logf("job %d: %s", id, l)
			}
		}
		for _, step := range []string{"root-is-nfs", "writes-in-tmpfs", "own-nfs-identity"} {
			if j.Outcome == "complete" && !strings.Contains(log, "# test "+step+": pass") {
				t.Errorf("job %d: test %s did not pass", id, step)
			}
		}
		m := exportedAs.FindStringSubmatch(log)
		if m == nil {
			t.Errorf("job %d log names no export", id)
			continue
		}
		exported = append(exported, m[1])
	}
	step("two nfs jobs at once")
	if len(exported) == 2 && exported[0] != exported[1] {
		t.Errorf("one root exported twice: %v", exported)
	}
	for _, p := range exported {
		if live := srv.LiveExports(); slices.Contains(live, p) {
			t.Errorf("export %s still live after both jobs: %v", p, live)
		}
	}
	roots, _ := filepath.Glob(filepath.Join(lab.Dir, "state", "cache", "roots", "[0-9a-f]*"))
	var dirs []string
	for _, r := range roots {
		if fi, err := os.Stat(r); err == nil && fi.IsDir() {
			dirs = append(dirs, r)
		}
	}
	if len(dirs) != 1 || strings.Count(logs, "unpacked into") != 1 || strings.Count(logs, ": shared") != 1 {
		t.Errorf("want one unpacked root shared by both jobs: %v\n%s", dirs, logs)
	}
	if len(dirs) == 1 {
		if _, err := os.Stat(filepath.Join(dirs[0], "etc", "written")); err == nil {
			t.Error("a node's write reached the server's copy of the root")
		}
	}
	if files, _ := filepath.Glob(filepath.Join(srv.Config.ExportsDir, "labctl-*")); len(files) != 0 {
		t.Errorf("export files left: %v", files)
	}

	ram := submit(disklessJob(t, art, "ramdisk", lab.Nodes[0].Name, "ramdisk", "", `
[[test]]
name = "no-network-fs"
commands = ["! grep -E ' (nfs|nfs4|cifs|9p|fuse[.a-z]*) ' /proc/mounts", "grep -q ' / rootfs ' /proc/mounts", "grep -q 'BOOT_IMAGE=http' /proc/cmdline"]
`))
	if j := finished(ram); j.Outcome != "complete" {
		t.Errorf("ramdisk job: %s: %s\n%s", j.Outcome, j.Reason, tail(jobLog(ram), 60))
	}
	for _, l := range strings.Split(jobLog(ram), "\n") {
		if strings.Contains(l, "logged in as") || strings.Contains(l, "no-network-fs") {
			t.Logf("ramdisk job: %s", l)
		}
	}
	step("ramdisk job")
	for _, n := range lab.Nodes {
		if got, _ := simlabtest.DiskSHA256(t, filepath.Join(n.Dir, "disk.img")); got != disks[n.Name] {
			t.Errorf("%s: disk changed (sha256 %s, was %s)", n.Name, got, disks[n.Name])
		}
	}

	// Faults: they end before the node boots; the node stays off.
	notTar := filepath.Join(t.TempDir(), "root.tar.zst")
	if err := os.WriteFile(notTar, []byte("not an archive\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := submit(disklessJob(t, art, "not-a-tar", lab.Nodes[1].Name, "nfs", notTar, nfsSteps))
	if j := finished(bad); j.Outcome != "incomplete" || !strings.Contains(j.Reason, "boot.root") || !strings.Contains(j.Reason, "not a tar archive") {
		t.Errorf("root not an archive: %s: %s", j.Outcome, j.Reason)
	} else {
		t.Logf("root not an archive: %s: %s", j.Outcome, j.Reason)
	}
	if left, _ := filepath.Glob(filepath.Join(lab.Dir, "state", "cache", "roots", ".unpack*")); len(left) != 0 {
		t.Errorf("half-unpacked roots left: %v", left)
	}
	srv.Stop()
	waitLabDevice(t, client, lab.Nodes[1].Name, labctl.DeviceIdle, 2*time.Minute)
	down := submit(disklessJob(t, art, "nfs-down", lab.Nodes[1].Name, "nfs", root, nfsSteps))
	if j := finished(down); j.Outcome != "incomplete" || !strings.Contains(j.Reason, "nfs-ganesha is not running") {
		t.Errorf("NFS server stopped: %s: %s", j.Outcome, j.Reason)
	} else {
		t.Logf("NFS server stopped: %s: %s", j.Outcome, j.Reason)
	}
	for _, n := range lab.Nodes {
		if nodePower(t, n) {
			t.Errorf("%s left powered on", n.Name)
		}
	}
	step("faults")
}

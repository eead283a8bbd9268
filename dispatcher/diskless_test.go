package dispatcher_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/dispatcher/dispatchertest"
	"github.com/labctl/labctl/jobs"
	"github.com/labctl/labctl/results"
)

// bootFiles writes a kernel and an initrd (any bytes: the simulated node
// only fetches them) and returns their paths.
func bootFiles(t *testing.T) (kernel, initrd string) {
	t.Helper()
	dir := t.TempDir()
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.gz")
	os.WriteFile(kernel, bytes.Repeat([]byte("k"), 3000), 0o644)
	os.WriteFile(initrd, bytes.Repeat([]byte("i"), 5000), 0o644)
	return kernel, initrd
}

// rootTar writes a gzip tar of a small root file system.
func rootTar(t *testing.T, extra ...*tar.Header) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	add(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "./bin/busybox", Typeflag: tar.TypeReg, Mode: 0o4755}, "#!busybox")
	add(&tar.Header{Name: "./bin/sh", Typeflag: tar.TypeSymlink, Linkname: "/bin/busybox"}, "")
	add(&tar.Header{Name: "./bin/ash", Typeflag: tar.TypeLink, Linkname: "./bin/busybox"}, "")
	add(&tar.Header{Name: "./etc/shadow", Typeflag: tar.TypeReg, Mode: 0o600}, "root:x:::")
	add(&tar.Header{Name: "./dev/console", Typeflag: tar.TypeChar, Mode: 0o600, Devmajor: 5, Devminor: 1}, "")
	for _, h := range extra {
		add(h, "")
	}
	tw.Close()
	zw.Close()
	path := filepath.Join(t.TempDir(), "root.tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func runDiskless(t *testing.T, n *dispatchertest.Node, spec *jobs.Job, cache string) (*results.Job, string) {
	t.Helper()
	var dir string
	res, log := runJob(t, n, spec, func(j *dispatcher.Job) { j.CacheDir, dir = cache, j.Dir })
	if _, err := os.Stat(filepath.Join(dir, "junit.xml")); err != nil {
		t.Errorf("no junit.xml: %v", err)
	}
	return res, log
}

// A ramdisk job boots the job's kernel and initrd over the network (no
// deploy, no disk), logs in, runs its steps and ends with the node off and
// its entry local.
func TestRunRamdisk(t *testing.T) {
	n := newNode(t)
	kernel, initrd := bootFiles(t)
	spec := parseJob(t, `
device = "node1"
artifacts = ["`+kernel+`"]
[boot]
method = "ramdisk"
kernel = "`+kernel+`"
initrd = "`+initrd+`"
append = "console=ttyS0 quiet"
password = "test"
[[test]]
name = "hello"
commands = ["echo hello"]
`)
	res, log := runDiskless(t, n, spec, t.TempDir())
	if res.Outcome != "complete" {
		t.Fatalf("outcome %s (%s)\n%s", res.Outcome, res.Reason, log)
	}
	if len(res.Artifacts) != 1 || len(res.Steps) != 1 || res.Steps[0].Result != results.Pass {
		t.Errorf("artifacts %v, steps %+v", res.Artifacts, res.Steps)
	}
	var phases []string
	for _, p := range res.Phases {
		phases = append(phases, p.Name)
	}
	if !slices.Equal(phases, []string{"boot", "test", "finalize"}) {
		t.Errorf("phases %v, want boot, test, finalize", phases)
	}
	boots := n.KernelBoots()
	if len(boots) != 1 || boots[0].KernelBytes != 3000 || boots[0].InitrdBytes != 5000 || boots[0].Cmdline != "console=ttyS0 quiet" {
		t.Errorf("kernel boots %+v", boots)
	}
	calls := n.Calls()
	if slices.Contains(calls, "pxe master") || calls[len(calls)-1] != "pxe local" || !slices.Contains(calls, "bootdev pxe") {
		t.Errorf("calls %v", calls)
	}
	checkFinalized(t, n)
	if st, _ := os.Stat(n.Disk); st.Size() != 0 {
		t.Error("the disk was written")
	}
}

// NFS jobs: the root archive is unpacked once (setuid bits, links, no
// device nodes) and shared by two jobs that start together; each export is
// withdrawn at the end; the kernel command line names the export and the
// node's own NFSv4 client identity. A root
// that is not an archive, one with an entry leaving it, and an NFS server
// that refuses: incomplete, nothing unpacked left, the node off.
func TestRunNFS(t *testing.T) {
	kernel, initrd := bootFiles(t)
	cache := t.TempDir()
	root := rootTar(t)
	job := func(root string) *jobs.Job {
		return parseJob(t, `
device = "node1"
[boot]
method = "nfs"
kernel = "`+kernel+`"
initrd = "`+initrd+`"
root = "`+root+`"
password = "test"
[[test]]
name = "hello"
commands = ["echo hello"]
`)
	}
	nodes := []*dispatchertest.Node{newNode(t), newNode(t)}
	var wg sync.WaitGroup
	logs := make([]string, 2)
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, log := runDiskless(t, n, job(root), cache)
			logs[i] = log
			if res.Outcome != "complete" {
				t.Errorf("node %d: outcome %s (%s)\n%s", i, res.Outcome, res.Reason, log)
			}
		}()
	}
	wg.Wait()
	entries, _ := os.ReadDir(filepath.Join(cache, "roots"))
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) != 1 {
		t.Fatalf("roots %v, want one unpacked copy", dirs)
	}
	unpacked := filepath.Join(cache, "roots", dirs[0])
	if strings.Count(logs[0]+logs[1], "unpacked into") != 1 || strings.Count(logs[0]+logs[1], ": shared") != 1 {
		t.Errorf("want one unpack and one shared use in the logs:\n%s\n%s", logs[0], logs[1])
	}
	for i, n := range nodes {
		ex := n.Exports()
		if len(ex) != 1 || ex[0].Dir != unpacked || !ex[0].Withdrawn() {
			t.Errorf("node %d exports %+v", i, ex)
		}
		boots := n.KernelBoots()
		if len(boots) != 1 || !strings.Contains(boots[0].Cmdline, "nfsroot="+ex[0].Source()+",vers=4.1,port=2049") ||
			!strings.Contains(boots[0].Cmdline, " nfs.nfs4_unique_id=labctl."+n.Name) {
			t.Errorf("node %d cmdline %+v", i, boots)
		}
		if n.On() {
			t.Errorf("node %d left on", i)
		}
	}
	if fi, err := os.Lstat(filepath.Join(unpacked, "bin/busybox")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("busybox: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(unpacked, "bin/sh")); l != "/bin/busybox" {
		t.Errorf("bin/sh -> %q", l)
	}
	if _, err := os.Lstat(filepath.Join(unpacked, "dev/console")); err == nil {
		t.Error("a device node was unpacked")
	}
	if fi, _ := os.Stat(filepath.Join(cache, "roots")); fi.Mode().Perm() != 0o700 {
		t.Errorf("roots dir mode %v, want 0700", fi.Mode().Perm())
	}

	notTar := filepath.Join(t.TempDir(), "root.tar.gz")
	os.WriteFile(notTar, []byte("this is not a tar archive\n"), 0o644)
	escape := rootTar(t, &tar.Header{Name: "../../etc/evil", Typeflag: tar.TypeReg, Mode: 0o644})
	linkOut := rootTar(t, &tar.Header{Name: "./out", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, &tar.Header{Name: "./out/evil", Typeflag: tar.TypeReg, Mode: 0o644})
	for _, tc := range []struct{ root, want string }{
		{notTar, "not a tar archive"},
		{escape, "leaves the archive's root"},
		{linkOut, "out/evil"},
	} {
		n := newNode(t)
		res, log := runDiskless(t, n, job(tc.root), cache)
		if res.Outcome != "incomplete" || !strings.Contains(res.Reason, "boot.root") || !strings.Contains(res.Reason, tc.want) {
			t.Errorf("root %s: outcome %s (%s), want incomplete naming boot.root and %q\n%s", filepath.Base(tc.root), res.Outcome, res.Reason, tc.want, log)
		}
		if n.On() || len(n.Exports()) != 0 {
			t.Errorf("root %s: node on %v, exports %v", tc.root, n.On(), n.Exports())
		}
	}
	if _, err := os.Stat("/etc/evil"); err == nil {
		t.Error("/etc/evil was written")
	}
	entries, _ = os.ReadDir(filepath.Join(cache, "roots"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".unpack") {
			t.Errorf("half-unpacked root left: %s", e.Name())
		}
	}

	n := newNode(t)
	n.FailExports(os.ErrNotExist)
	res, _ := runDiskless(t, n, job(root), cache)
	if res.Outcome != "incomplete" || !strings.Contains(res.Reason, "NFS export") || n.On() {
		t.Errorf("export refused: outcome %s (%s), node on %v", res.Outcome, res.Reason, n.On())
	}
}

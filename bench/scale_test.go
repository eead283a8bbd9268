package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labctl/labctl/devices"
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

// TestNodeHost: the nodes split over the hosts in contiguous blocks that
// differ by one node at most, every node on one host.
func TestNodeHost(t *testing.T) {
	for _, c := range []struct{ nodes, hosts int }{{400, 3}, {24, 3}, {10, 3}, {5, 1}, {2, 2}, {7, 0}} {
		count := make([]int, max(c.hosts, 1))
		last := 0
		for i := range c.nodes {
			k := NodeHost(i, c.nodes, c.hosts)
			if k < last || k >= len(count) {
				t.Fatalf("%d nodes on %d hosts: node %d on host %d after host %d", c.nodes, c.hosts, i, k, last)
			}
			last = k
			count[k]++
		}
		if lo, hi := slices.Min(count), slices.Max(count); hi-lo > 1 {
			t.Errorf("%d nodes on %d hosts: %v per host", c.nodes, c.hosts, count)
		}
	}
}

// TestHostsLabFiles loads the lab files of a lab of three hosts on one
// PostgreSQL with labctl's own loader: each host has its block of the
// nodes, its name, the shared store and ports of its own.
func TestHostsLabFiles(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("SKIP: busybox not installed (busybox-static)")
	}
	t.Setenv("LABCTL_BENCH_BMC_PASSWORD", farmBMCPassword)
	t.Setenv("LABCTL_BENCH_TOKEN", scaleToken)
	t.Setenv("LABCTL_BENCH_HOST_TOKEN", scaleHostToken)
	dir := t.TempDir()
	const url = "postgres://postgres@127.0.0.1:5432/bench?sslmode=disable"
	c := ScaleCase{Nodes: 10, Jobs: 10, ImageSize: 4096, Hosts: 3, Postgres: url}
	_, labs, err := c.writeLab(dir, busybox)
	if err != nil {
		t.Fatal(err)
	}
	if len(labs) != 3 {
		t.Fatalf("lab files %q, want 3", labs)
	}
	seen := map[string]string{}
	listens := map[string]bool{}
	for k, file := range labs {
		lab, err := devices.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		if lab.Config.Store.URL != url || lab.Config.Host.Name != hostName(k) || lab.Config.Host.TokenEnv == "" {
			t.Errorf("%s: store %q host %+v", file, lab.Config.Store.URL, lab.Config.Host)
		}
		for _, l := range []string{lab.Config.Server.Listen, lab.Config.BootServer.HTTPListen, lab.Config.BootServer.TFTPListen} {
			if listens[l] {
				t.Errorf("%s: %s is another host's too", file, l)
			}
			listens[l] = true
		}
		if got := lab.Config.BootServer.HTTPURL; got != bootURL(k) {
			t.Errorf("%s: http_url %q, want %q (the farm's nodes of this host ask it)", file, got, bootURL(k))
		}
		for _, d := range lab.Devices {
			var i int
			fmt.Sscanf(d.Name, "node%d", &i)
			if other, ok := seen[d.Name]; ok {
				t.Errorf("%s is in %s and %s", d.Name, other, file)
			}
			seen[d.Name] = file
			if NodeHost(i-1, c.Nodes, 3) != k {
				t.Errorf("%s in host %d's lab file, NodeHost says %d", d.Name, k, NodeHost(i-1, c.Nodes, 3))
			}
		}
	}
	if len(seen) != c.Nodes {
		t.Errorf("%d nodes in the lab files, want %d", len(seen), c.Nodes)
	}

	// One host on SQLite: dir/lab.toml, no [store], no [host].
	dir = t.TempDir()
	c = ScaleCase{Nodes: 2, Jobs: 2, ImageSize: 4096}
	_, labs, err = c.writeLab(dir, busybox)
	if err != nil {
		t.Fatal(err)
	}
	lab, err := devices.Load(labs[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(labs) != 1 || lab.Config.Store.URL != "" || lab.Config.Host.Name != "" || len(lab.Devices) != 2 {
		t.Errorf("one host: labs %q store %q host %+v, %d devices", labs, lab.Config.Store.URL, lab.Config.Host, len(lab.Devices))
	}
}

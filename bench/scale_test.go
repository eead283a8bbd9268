package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
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
	job, lab, err := c.writeLab(dir, busybox)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(job, "device_type = \"fake-node\"") || filepath.Base(lab) != "lab.toml" {
		t.Fatalf("job %q lab %q", job, lab)
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

// TestWaitIdleRechecks: a device whose start-up health check failed is
// asked for a new check (at most recheckTries times), and waitIdle
// returns once every device is idle.
func TestWaitIdleRechecks(t *testing.T) {
	var mu sync.Mutex
	checks := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == "GET" && r.URL.Path == "/api/v1/devices":
			b := labctl.Device{Name: "b", State: labctl.DeviceOffline, Health: &labctl.Health{OK: false, Detail: "sol open: no answer"}}
			if checks["b"] >= 2 { // the second new check passes
				b = labctl.Device{Name: "b", State: labctl.DeviceIdle, Health: &labctl.Health{OK: true}}
			}
			json.NewEncoder(w).Encode([]labctl.Device{{Name: "a", State: labctl.DeviceIdle, Health: &labctl.Health{OK: true}}, b})
		case r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/health"):
			name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/api/v1/devices/"), "/health")
			checks[name]++
			json.NewEncoder(w).Encode(labctl.Device{Name: name})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	client, err := api.NewClient(srv.URL, "token", nil)
	if err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	p := &benchProc{log: log, exited: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.waitIdle(ctx, client, 2); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if checks["b"] < 2 || checks["b"] > recheckTries || checks["a"] != 0 {
		t.Fatalf("health checks asked: %v; want b checked again until it passed (at most %d), a never", checks, recheckTries)
	}
}

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/devices"
)

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

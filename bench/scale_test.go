package bench

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
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

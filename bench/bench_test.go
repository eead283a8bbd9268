package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/netboot"
)

func TestSummarize(t *testing.T) {
	tests := map[string]struct {
		in   []float64
		want Stat
	}{
		"odd":  {[]float64{3, 1, 2}, Stat{2, 1, 3}},
		"even": {[]float64{4, 1, 2, 3}, Stat{2.5, 1, 4}},
		"one":  {[]float64{7}, Stat{7, 7, 7}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Summarize(tt.in); got != tt.want {
				t.Fatalf("Summarize(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	if s := Summarize(nil); !math.IsNaN(s.Med) || s.Format(1) != "–" {
		t.Fatalf("empty: %v %q", s, s.Format(1))
	}
	if got := (Stat{1.25, 1, 2}).Format(1); got != "1.2 [1.0–2.0]" && got != "1.3 [1.0–2.0]" {
		t.Fatalf("Format: %q", got)
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for q, want := range map[float64]float64{0: 1, .5: 5, .99: 10, 1: 10, .1: 1, .11: 2} {
		if got := Percentile(xs, q); got != want {
			t.Errorf("Percentile(%v) = %v, want %v", q, got, want)
		}
	}
	if !math.IsNaN(Percentile(nil, .5)) {
		t.Error("empty percentile is not NaN")
	}
}

func TestTable(t *testing.T) {
	tb := &Table{Head: []string{"a", "b"}}
	tb.Add("1", "2")
	var b bytes.Buffer
	tb.Write(&b)
	if want := "| a | b |\n|---|---|\n| 1 | 2 |\n\n"; b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	if got := rotate([]int{1, 2, 3}, 4); got[0] != 2 || got[2] != 1 {
		t.Fatalf("rotate: %v", got)
	}
}

func TestLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:69": true, "[::1]:80": true, "10.0.0.1:69": false, "example.com:80": false} {
		if err := loopbackOnly(addr); (err == nil) != ok {
			t.Errorf("loopbackOnly(%s) = %v", addr, err)
		}
	}
	if _, err := RunTFTP(context.Background(), TFTPLoad{Addr: "192.0.2.1:69", N: 1}); err == nil {
		t.Error("RunTFTP accepted a non-loopback target")
	}
}

// TestRunTFTP runs the load generator against labctl's boot server: every
// client must get every byte, with and without a window, and a cap must cut
// transfers (not fail them).
func TestRunTFTP(t *testing.T) {
	root := t.TempDir()
	data := make([]byte, 300<<10+5)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(root, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := netboot.New(netboot.Config{Root: root, TFTPAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	for _, tc := range []struct{ blk, win int }{{0, 0}, {1468, 0}, {1468, 8}, {512, 16}} {
		r, err := RunTFTP(context.Background(), TFTPLoad{Addr: s.TFTPAddr().String(), File: "f", Ref: data, N: 5, BlkSize: tc.blk, Window: tc.win})
		if err != nil {
			t.Fatal(err)
		}
		if r.OK != 5 || r.Failed != 0 || r.Bytes != 5*int64(len(data)) || len(r.Durations) != 5 {
			t.Fatalf("blksize %d window %d: %+v", tc.blk, tc.win, r)
		}
		if tc.win > 0 && !strings.Contains(r.Granted, "window=") {
			t.Fatalf("granted %q", r.Granted)
		}
	}
	// A corrupt reference is caught.
	bad := bytes.Clone(data)
	bad[1000] ^= 1
	r, _ := RunTFTP(context.Background(), TFTPLoad{Addr: s.TFTPAddr().String(), File: "f", Ref: bad, N: 1, BlkSize: 1468})
	if r.Failed != 1 || r.Fails["corrupt data"] != 1 {
		t.Fatalf("corrupt reference not detected: %+v", r)
	}
	// A cap cuts, it does not fail.
	r, _ = RunTFTP(context.Background(), TFTPLoad{Addr: s.TFTPAddr().String(), File: "f", Ref: data, N: 3, Cap: time.Nanosecond})
	if r.Cut+r.OK != 3 || r.Failed != 0 {
		t.Fatalf("capped run: %+v", r)
	}
}

func TestRunHTTP(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	defer srv.Close()
	r, err := RunHTTP(context.Background(), HTTPLoad{URL: srv.URL + "/img", Size: int64(len(body)), N: 3, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Complete < 3 || len(r.Errors) != 0 || r.Bytes < 3<<20 || len(r.PerClientMBps) != 3 {
		t.Fatalf("%+v", r)
	}
}

// TestGroup starts a process in a group and reads its CPU and memory; it
// works with or without a usable cgroup hierarchy.
func TestGroup(t *testing.T) {
	g := NewGroup("bench-test")
	defer g.Remove()
	cmd := g.Command("sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.SetPid(cmd.Process.Pid)
	s := StartSample(g)
	time.Sleep(100 * time.Millisecond)
	if len(g.Pids()) == 0 {
		t.Errorf("no processes in the group (%s)", g.Method())
	}
	cmd.Wait()
	cpu, mem := s.Stop()
	t.Logf("method %s: cpu %.3fs peak %.1f MB", g.Method(), cpu, mem)
	if cpu < 0 || mem <= 0 {
		t.Fatalf("cpu %v mem %v", cpu, mem)
	}
}

package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
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

// tftpServer starts labctl's boot server on a loopback TFTP port, serving
// the file "f" of size random bytes, until the test ends.
func tftpServer(t *testing.T, size int) (addr string, data []byte) {
	t.Helper()
	root := t.TempDir()
	data = make([]byte, size)
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
	t.Cleanup(func() { cancel(); <-done })
	return s.TFTPAddr().String(), data
}

// TestRunTFTP runs the load generator against labctl's boot server: every
// client must get every byte, with and without a window, and a cap must cut
// transfers (not fail them).
func TestRunTFTP(t *testing.T) {
	addr, data := tftpServer(t, 300<<10+5)
	for _, tc := range []struct{ blk, win int }{{0, 0}, {1468, 0}, {1468, 8}, {512, 16}} {
		r, err := RunTFTP(context.Background(), TFTPLoad{Addr: addr, File: "f", Ref: data, N: 5, BlkSize: tc.blk, Window: tc.win})
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
	r, _ := RunTFTP(context.Background(), TFTPLoad{Addr: addr, File: "f", Ref: bad, N: 1, BlkSize: 1468})
	if r.Failed != 1 || r.Fails["corrupt data"] != 1 {
		t.Fatalf("corrupt reference not detected: %+v", r)
	}
	// A cap cuts, it does not fail.
	r, _ = RunTFTP(context.Background(), TFTPLoad{Addr: addr, File: "f", Ref: data, N: 3, Cap: time.Nanosecond})
	if r.Cut+r.OK != 3 || r.Failed != 0 {
		t.Fatalf("capped run: %+v", r)
	}
}

// TestRunTFTPCurl runs curl's TFTP client, the independent generator,
// against labctl's boot server: every byte arrives and is compared.
func TestRunTFTPCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("SKIP: curl not installed (Debian package curl)")
	}
	addr, data := tftpServer(t, 200<<10+3)
	for _, blk := range []int{0, 1468} {
		r, err := RunTFTPCurl(context.Background(), TFTPLoad{Addr: addr, File: "f", Ref: data, N: 4, BlkSize: blk})
		if err != nil {
			t.Fatal(err)
		}
		if r.OK != 4 || r.Failed != 0 || r.Bytes != 4*int64(len(data)) || len(r.Durations) != 4 {
			t.Fatalf("blksize %d: %+v", blk, r)
		}
	}
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	r, _ := RunTFTPCurl(context.Background(), TFTPLoad{Addr: addr, File: "f", Ref: bad, N: 1})
	if r.Failed != 1 || r.Fails["corrupt data"] != 1 {
		t.Fatalf("corrupt reference not detected: %+v", r)
	}
	r, _ = RunTFTPCurl(context.Background(), TFTPLoad{Addr: addr, File: "missing", Ref: data, N: 1})
	if r.Failed != 1 || r.OK != 0 {
		t.Fatalf("a missing file did not fail: %+v", r)
	}
	if _, err := RunTFTPCurl(context.Background(), TFTPLoad{Addr: addr, File: "f", Ref: data, N: 1, Window: 8}); err == nil {
		t.Fatal("curl run with a window accepted")
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
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	// The process joins the group before it execs; it is seen there
	// before it ends.
	for seen := false; !seen; {
		seen = len(g.Pids()) > 0
		select {
		case <-exited:
			if !seen && len(g.Pids()) == 0 {
				t.Errorf("the process ended never seen in the group (%s)", g.Method())
			}
			seen = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	<-exited
	cpu, mem := s.Stop()
	t.Logf("method %s: cpu %.3fs peak %.1f MB", g.Method(), cpu, mem)
	if cpu < 0 || mem <= 0 {
		t.Fatalf("cpu %v mem %v", cpu, mem)
	}
}

// TestParseWrk reads wrk's report as wrk 4.2 prints it.
func TestParseWrk(t *testing.T) {
	out := `Running 8s test @ http://127.0.0.1:18082/disk.img
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us     nan%
    Req/Sec     1.75      0.96     3.00     75.00%
  12 requests in 8.10s, 5.50GB read
  Socket errors: connect 0, read 3, write 0, timeout 0
  Non-2xx or 3xx responses: 2
Requests/sec:      1.48
Transfer/sec:    695.31MB
`
	r, err := parseWrk(out, 50)
	if err != nil {
		t.Fatal(err)
	}
	if r.Complete != 12 || r.Bytes != int64(5.5*(1<<30)) || r.Wall != 8100*time.Millisecond {
		t.Fatalf("parsed %+v", r)
	}
	if r.Errors["socket read"] != 3 || r.Errors["non-2xx responses"] != 2 || len(r.Errors) != 2 || len(r.PerClientMBps) != 50 {
		t.Fatalf("errors %v, %d per-client figures", r.Errors, len(r.PerClientMBps))
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused", 1); err == nil {
		t.Fatal("a report without a summary parsed")
	}
}

// TestStartFarmStops starts a stand-in farm (it says ready, leaves a
// process in a session of its own and runs until its stdin closes) and
// one that exits without saying ready: stop, and startFarm's own failure
// path, must leave no process behind.
func TestStartFarmStops(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("SKIP: setsid not installed (util-linux)")
	}
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	childFile := filepath.Join(dir, "child")
	c := ScaleCase{Nodes: 1}
	farm, err := c.startFarm(context.Background(), dir, script("farm", "setsid sleep 600 </dev/null >/dev/null 2>&1 &\necho $! > "+childFile+"\necho ready\ncat >/dev/null\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(childFile)
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !alive(child) {
		t.Fatalf("the farm's session child %q is not running (%v)", b, err)
	}
	farm.stop()
	waitGone(t, child)
	select {
	case <-farm.exited:
	default:
		t.Fatal("stop returned before the farm exited")
	}
	if d := farm.group.dir; d != "" {
		if _, err := os.Stat(d); err == nil {
			t.Fatalf("the farm's control group %s is left", d)
		}
	}

	os.Remove(childFile)
	if _, err := c.startFarm(context.Background(), dir, script("broken", "setsid sleep 600 </dev/null >/dev/null 2>&1 &\necho $! > "+childFile+"\necho 'no BMC' >&2\nexit 1\n"), nil); err == nil || !strings.Contains(err.Error(), "did not start") {
		t.Fatalf("a farm that never said ready: %v", err)
	}
	if b, err = os.ReadFile(childFile); err != nil {
		t.Fatal(err)
	}
	child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	waitGone(t, child)
	if log, _ := os.ReadFile(filepath.Join(dir, "farm.log")); !strings.Contains(string(log), "no BMC") {
		t.Fatalf("farm.log: %q", log)
	}
}

// alive says whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// waitGone fails t unless pid is gone within 10 s of its kill.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d left running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNeeds skips a case, naming what is missing: a file, then a program.
func TestNeeds(t *testing.T) {
	dir := t.TempDir()
	if err := needs([]string{dir}, []string{"sh"}); err != nil {
		t.Fatalf("everything there: %v", err)
	}
	missing := filepath.Join(dir, "vmlinuz")
	if err := needs([]string{dir, missing}, []string{"sh"}); !errors.Is(err, ErrSkipped) || !strings.Contains(err.Error(), missing+" missing") {
		t.Fatalf("missing file: %v", err)
	}
	if err := needs([]string{dir}, []string{"sh", "labctl-bench-no-such-program"}); !errors.Is(err, ErrSkipped) || !strings.Contains(err.Error(), "labctl-bench-no-such-program not installed") {
		t.Fatalf("missing program: %v", err)
	}
}

// TestGroupAddAndPin moves a running process into a group and pins it to
// CPU 0, as case hosts does with the PostgreSQL server it did not start
// through a group.
func TestGroupAddAndPin(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	g := NewGroup("bench-test-add")
	defer g.Remove()
	if err := g.Add(pid); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(g.Pids(), pid) {
		t.Errorf("process %d not in the group (%s): %v", pid, g.Method(), g.Pids())
	}
	if err := PinToCPUs(pid, "0"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if !regexp.MustCompile(`(?m)^Cpus_allowed_list:\s+0$`).Match(b) {
		t.Errorf("after PinToCPUs(%d, \"0\"):\n%s", pid, b)
	}
	for _, bad := range []string{"x", "2-1", "-1", "0,,1"} {
		if err := PinToCPUs(pid, bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("CPU list %q: %v", bad, err)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := PinToCPUs(pid, "0"); err != nil {
		t.Errorf("pin an ended process: %v", err)
	}
}

// A single client's row fetches the file until SoloBytes have moved, the
// servers taking turns; a load whose fetch failed takes no more turns.
func TestSoloTurns(t *testing.T) {
	c := TFTPCase{SoloBytes: 1 << 20}
	for _, tc := range []struct{ size, n, want int }{
		{100 << 10, 1, 11}, {1 << 20, 1, 1}, {30 << 20, 1, 1}, {100 << 10, 50, 1},
	} {
		if got := c.repeats(tc.size, tc.n); got != tc.want {
			t.Errorf("repeats(%d, %d) = %d, want %d", tc.size, tc.n, got, tc.want)
		}
	}
	var order []string
	run := func(_ context.Context, l TFTPLoad) (TFTPResult, error) {
		order = append(order, l.Addr)
		r := TFTPResult{OK: 1, Bytes: 1000, Wall: time.Millisecond, Durations: []float64{.001}, Fails: map[string]int{}}
		if l.Addr == "b" && len(order) > 2 {
			r = TFTPResult{Failed: 1, Fails: map[string]int{"timeout": 1}, Wall: time.Millisecond}
		}
		return r, nil
	}
	outs, err := runTurns(context.Background(), run, []TFTPLoad{{Addr: "a"}, {Addr: "b"}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ""); got != "ababa" {
		t.Errorf("turns %q, want ababa: a and b alternating until b fails", got)
	}
	if outs[0].OK != 3 || outs[0].Bytes != 3000 || outs[0].Wall != 3*time.Millisecond || outs[0].MBps() != 1 {
		t.Errorf("a: %+v", outs[0])
	}
	if outs[1].OK != 1 || outs[1].Failed != 1 || outs[1].Fails["timeout"] != 1 {
		t.Errorf("b: %+v", outs[1])
	}
}

// Case 2's ratio is taken within each round, where the servers took turns.
func TestPairedRatios(t *testing.T) {
	got := PairedRatios([]float64{90, 200, 50, 7}, []float64{100, 100, 50})
	if got != (Stat{1, 0.9, 2}) {
		t.Errorf("PairedRatios = %+v, want median 1 of 0.9, 2, 1", got)
	}
	if got := PairedRatios([]float64{1}, []float64{0}); !math.IsNaN(got.Med) {
		t.Errorf("no round with a peer figure: %+v, want NaN", got)
	}
}

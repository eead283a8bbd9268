package farm

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/bmc"
	"github.com/labctl/labctl/internal/fakeos"
)

// TestNode drives one node the way the daemon does, through
// labctl's own IPMI client: power on with a master entry on the boot
// server gives the master shell on native SOL, a power cycle with no entry
// and a bootable disk gives the login and the test shell, power off ends
// the shell.
func TestNode(t *testing.T) {
	var master atomic.Bool
	master.Store(true)
	var asked atomic.Int32
	boot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/pxelinux.cfg/01-52-54-01-00-00-01" {
			t.Errorf("boot server asked for %s", r.URL.Path)
		}
		asked.Add(1)
		if !master.Load() {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "DEFAULT master\nLABEL master\n  KERNEL fake/vmlinuz\n")
	}))
	defer boot.Close()

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	poller := newSOLPoller()
	polled := make(chan struct{})
	go func() { poller.run(ctx, solPollEvery); close(polled) }()
	defer func() { cancel(); <-polled }()
	n := &Node{Dir: filepath.Join(dir, "node001"), bin: filepath.Join(dir, "bin"),
		cfgURL: boot.URL + "/pxelinux.cfg/01-52-54-01-00-00-01", poller: poller}
	os.MkdirAll(n.Dir, 0o755)
	const password = "farm-test-password"
	srv, port, err := n.serveBMC(password, 0)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.Serve(ctx); close(served) }()
	defer func() { cancel(); srv.Close(); <-served; n.setPower(false); n.ended() }()

	// Power and console on clients of their own, as the daemon has them.
	cfg := bmc.Config{Host: "127.0.0.1", Port: port, User: User, Password: password, CipherSuite: 3,
		Timeout: 2 * time.Second}
	c := bmc.New(cfg, slog.New(slog.DiscardHandler))
	defer c.Close()
	sc := bmc.New(cfg, slog.New(slog.DiscardHandler))
	defer sc.Close()
	// A console per boot, as the dispatcher attaches one per job phase.
	var console io.ReadWriteCloser
	var out chan string
	attach := func() {
		t.Helper()
		if console != nil {
			console.Close()
		}
		var err error
		console, err = sc.OpenSOL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out = make(chan string, 64)
		go func(console io.ReadWriteCloser, out chan string) {
			buf := make([]byte, 4096)
			for {
				k, err := console.Read(buf)
				if k > 0 {
					out <- string(buf[:k])
				}
				if err != nil {
					close(out)
					return
				}
			}
		}(console, out)
	}
	attach()
	defer func() { console.Close() }()
	var seen strings.Builder
	expect := func(want string) {
		t.Helper()
		for !strings.Contains(seen.String(), want) {
			select {
			case s, ok := <-out:
				if !ok {
					t.Fatalf("console closed waiting for %q; got %q", want, seen.String())
				}
				seen.WriteString(s)
			case <-ctx.Done():
				t.Fatalf("no %q on the console; got %q", want, seen.String())
			}
		}
		_, rest, _ := strings.Cut(seen.String(), want)
		seen.Reset()
		seen.WriteString(rest)
	}
	typ := func(s string) {
		t.Helper()
		if _, err := console.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}

	if err := c.Power(ctx, bmc.PowerOn); err != nil {
		t.Fatal(err)
	}
	expect("master# ")
	typ("echo $((6*7))\r")
	expect("42")

	// The next boot: no entry, and a disk with a boot signature.
	master.Store(false)
	mbr := make([]byte, 512)
	fakeos.MarkBootable(mbr)
	if err := os.WriteFile(filepath.Join(n.Dir, "disk.img"), mbr, 0o644); err != nil {
		t.Fatal(err)
	}
	attach()
	if err := c.Power(ctx, bmc.PowerCycle); err != nil {
		t.Fatal(err)
	}
	expect("testos login: ")
	typ("root\r")
	expect("Password: ")
	typ("nope\r")
	expect("Login incorrect")
	expect("testos login: ")
	typ("root\r")
	expect("Password: ")
	typ("test\r")
	expect("testos# ")
	typ("echo up\r")
	expect("up")

	if err := c.Power(ctx, bmc.PowerOff); err != nil {
		t.Fatal(err)
	}
	if on, err := c.PowerState(ctx); err != nil || on {
		t.Fatalf("power state on=%v err=%v after power off", on, err)
	}
	n.mu.Lock()
	booted := n.booted
	n.mu.Unlock()
	select {
	case <-booted: // the shell and its session are gone
	case <-ctx.Done():
		t.Fatal("the test shell outlived the power-off")
	}
	if asked.Load() < 2 {
		t.Errorf("boot server asked %d times, want once per boot", asked.Load())
	}
}

// TestWriteBinDisk checks the one thing of the nodes' commands that could
// do harm: their dd must write the node's disk.img, never the device path
// the dispatcher names; and that their wget reaches the host at HostAlias.
func TestWriteBinDisk(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("SKIP: busybox not installed (busybox-static)")
	}
	dir := t.TempDir()
	if err := WriteBin(filepath.Join(dir, "nodes"), busybox); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "nodes", "node001", "disk.img")
	os.MkdirAll(filepath.Dir(disk), 0o755) // Start makes each node's directory
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, Image(4096), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/bash", "-c", "set -o pipefail; cat "+img+" | dd of="+Disk+" bs=4M && sync && dd if="+Disk+" bs=4M count=4096 iflag=count_bytes | sha256sum")
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
	if _, err := os.Stat(Disk); err == nil {
		t.Fatalf("%s exists", Disk)
	}
	// Without the wrapper's variable, dd fails instead of writing /dev.
	cmd = exec.Command("/bin/bash", "-c", "echo x | dd of="+Disk)
	cmd.Env = []string{"PATH=" + filepath.Join(dir, "nodes", "bin")}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("dd without FAKE_DISK succeeded: %s", out)
	}
	// wget reaches the host at HostAlias, as a node on QEMU's user-mode
	// network does.
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served "+r.URL.Path)
	}))
	defer web.Close()
	_, port, _ := strings.Cut(strings.TrimPrefix(web.URL, "http://"), ":")
	cmd = exec.Command("/bin/bash", "-c", "wget -q -O - http://"+HostAlias+":"+port+"/image.gz")
	cmd.Env = []string{"PATH=" + filepath.Join(dir, "nodes", "bin")}
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "served /image.gz" {
		t.Fatalf("wget of %s: %q, %v", HostAlias, out, err)
	}
}

// TestSOLPoller: a pump's ticker ticks once however often it is kicked
// before it runs, the poller kicks every live ticker, and a stopped
// ticker is neither the node's nor the poller's any more.
func TestSOLPoller(t *testing.T) {
	p := newSOLPoller()
	n := &Node{poller: p}
	tk := nodeClock{n}.NewTicker(10 * time.Millisecond).(*solTicker)
	n.mu.Lock()
	if n.pump != tk {
		t.Fatal("the node does not know its pump's ticker")
	}
	n.mu.Unlock()
	n.sol = &solConsole{node: n}
	n.sayString("a")
	n.sayString("b")
	select {
	case <-tk.C():
	default:
		t.Fatal("output did not kick the pump")
	}
	select {
	case <-tk.C():
		t.Fatal("two kicks before the pump ran made two ticks")
	default:
	}
	if got := string(n.sol.out); got != "ab" {
		t.Fatalf("console output %q, want %q", got, "ab")
	}

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { p.run(ctx, time.Millisecond); close(ran) }()
	<-tk.C() // the poller's tick
	tk.Stop()
	cancel()
	<-ran
	p.mu.Lock()
	left := len(p.tickers)
	p.mu.Unlock()
	n.mu.Lock()
	pump := n.pump
	n.mu.Unlock()
	if left != 0 || pump != nil {
		t.Fatalf("a stopped ticker is still registered: poller %d, node %v", left, pump)
	}
}

// TestStartPolledNoThreadPerShell: shells waiting on their ptys cost
// goroutines, not threads (a blocking pty read holds a thread each).
func TestStartPolledNoThreadPerShell(t *testing.T) {
	threads := func() int {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Skip("no /proc/self/task:", err)
		}
		return len(ents)
	}
	const shells = 40
	before := threads()
	var cmds []*exec.Cmd
	var ptys []*os.File
	defer func() {
		for i, f := range ptys {
			killSession(cmds[i].Process.Pid, "")
			f.Close()
			cmds[i].Wait()
		}
	}()
	reads := make(chan string, shells)
	for range shells {
		cmd := exec.Command("/bin/sh", "-c", "echo up; exec sleep 60")
		f, err := startPolled(cmd)
		if err != nil {
			t.Fatal(err)
		}
		cmds, ptys = append(cmds, cmd), append(ptys, f)
		go func() {
			buf := make([]byte, 64)
			var got []byte
			for {
				k, err := f.Read(buf)
				got = append(got, buf[:k]...)
				if strings.Contains(string(got), "up") {
					reads <- "up"
				}
				if err != nil {
					return
				}
				if strings.Contains(string(got), "up") {
					got = got[:0]
					// The next read waits for output that never comes.
				}
			}
		}()
	}
	for range shells {
		<-reads
	}
	// Every reader now waits in a read of its pty.
	if grown := threads() - before; grown >= shells/2 {
		t.Errorf("%d shells waiting on their ptys added %d threads: their reads block threads", shells, grown)
	}
}

// TestKillSessionsInOnePass: sessions asked for together die together,
// in one pass over /proc, pipelines in process groups of their own
// (job control) included.
func TestKillSessionsInOnePass(t *testing.T) {
	// live counts the processes of session sid that have not ended (a
	// zombie waits for whoever reaps orphans).
	live := func(sid int) int {
		ents, _ := os.ReadDir("/proc")
		n := 0
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if s, err := unix.Getsid(pid); err != nil || s != sid {
				continue
			}
			stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if i := bytes.LastIndexByte(stat, ')'); i < 0 || !bytes.HasPrefix(stat[i:], []byte(") Z")) {
				n++
			}
		}
		return n
	}
	const sessions = 8
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for range sessions {
		// Job control (set -m): each sleep in a process group of its
		// own, as in the nodes' interactive shells.
		c := exec.Command("/bin/bash", "-c", "set -m; sleep 60 & sleep 61 & wait")
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		for deadline := time.Now().Add(30 * time.Second); live(c.Process.Pid) < 3; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("session %d: %d processes after 30s, want 3", c.Process.Pid, live(c.Process.Pid))
			}
		}
	}
	// Hold the passes until every call has asked, then let one run.
	reaper.mu.Lock()
	if reaper.running {
		reaper.mu.Unlock()
		t.Skip("another test's kill is running")
	}
	reaper.running = true
	passes := reaper.passes
	reaper.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cmds {
		wg.Go(func() { killSession(c.Process.Pid, "") })
	}
	for {
		reaper.mu.Lock()
		n := len(reaper.asked)
		reaper.mu.Unlock()
		if n == sessions {
			break
		}
		runtime.Gosched()
	}
	go reaper.run()
	wg.Wait()
	reaper.mu.Lock()
	made := reaper.passes - passes
	reaper.mu.Unlock()
	if made != 1 {
		t.Errorf("%d sessions asked for together: %d passes over /proc, want 1", sessions, made)
	}
	for _, c := range cmds {
		c.Wait()
		// SIGKILL is sent; the processes end as the kernel gets to them.
		for deadline := time.Now().Add(30 * time.Second); live(c.Process.Pid) > 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("session %d: %d processes live 30s after killSession", c.Process.Pid, live(c.Process.Pid))
			}
		}
	}
}

// TestClosedNodeStaysOff: a BMC request still being handled when the farm
// closes must not boot a node, whose boot Farm.Close would wait for.
func TestClosedNodeStaysOff(t *testing.T) {
	n := &Node{}
	n.mu.Lock()
	n.closed = true
	n.setPowerLocked(false)
	n.mu.Unlock()
	n.setPower(true)
	if err := (*chassis)(n).PowerCycle(context.Background()); err == nil {
		t.Error("a closed node, off, took a power cycle")
	}
	if on, _ := (*chassis)(n).PowerState(context.Background()); on {
		t.Fatal("a closed node powered on")
	}
	ended := make(chan struct{})
	go func() { n.ended(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("a closed node's boot did not end")
	}
}

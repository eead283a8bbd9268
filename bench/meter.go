// Package bench measures labctl against the programs a lab would
// otherwise use: load generators for TFTP and HTTP, launchers for
// the peer servers, CPU and memory accounting of a server's process tree,
// and the markdown report. The cases themselves are in case_*.go; the
// labctl-bench command (bench/cmd/labctl-bench) runs them.
package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Group is a control group that one server and everything it forks run
// in, so that its CPU time is counted exactly: tftpd-hpa and busybox httpd
// fork a child per transfer, and Linux reaps those without adding their
// time to the parent. Without a usable cgroup hierarchy it falls back to
// summing /proc of the process tree (children already gone are missed;
// the report says which method was used).
type Group struct {
	name string
	dir  string // cgroup directory, "" when falling back to /proc
	v2   bool
	pid  int // the server's main process, for the /proc fallback
}

// cgroupBase finds where the bench may create groups: cgroup v1's cpuacct
// hierarchy, else the cgroup v2 root. It returns "" if neither is writable.
// The base is this process's own (labctl-bench.PID): two benches at once
// (make test runs bench-quick) must not count, kill or remove each other's
// servers.
func cgroupBase() (dir string, v2 bool) {
	name := fmt.Sprintf("labctl-bench.%d", os.Getpid())
	if st, err := os.Stat("/sys/fs/cgroup/cpuacct/cpuacct.usage"); err == nil && st.Mode().IsRegular() {
		d := filepath.Join("/sys/fs/cgroup/cpuacct", name)
		if os.MkdirAll(d, 0o755) == nil {
			return d, false
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		d := filepath.Join("/sys/fs/cgroup", name)
		if os.MkdirAll(d, 0o755) == nil {
			return d, true
		}
	}
	return "", false
}

// NewGroup makes (or reuses) the group name.
func NewGroup(name string) *Group {
	g := &Group{name: name}
	base, v2 := cgroupBase()
	if base == "" {
		return g
	}
	d := filepath.Join(base, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return g
	}
	if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err != nil {
		return g
	}
	g.dir, g.v2 = d, v2
	return g
}

// Method says how CPU time is counted, for the report.
func (g *Group) Method() string {
	switch {
	case g.dir != "" && g.v2:
		return "cgroup v2 cpu.stat"
	case g.dir != "":
		return "cgroup v1 cpuacct"
	}
	return "/proc of the process tree"
}

// Command wraps argv so that the process joins the group before it execs
// the program (a shell trampoline: nothing is forked outside the group).
func (g *Group) Command(argv ...string) *exec.Cmd {
	if g.dir == "" {
		return exec.Command(argv[0], argv[1:]...)
	}
	args := append([]string{"-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, g.dir}, argv...)
	return exec.Command("/bin/sh", args...)
}

// SetPid names the server's main process (for the /proc fallback and for
// memory sampling without a group).
func (g *Group) SetPid(pid int) { g.pid = pid }

// CPU returns the CPU seconds the group has used so far.
func (g *Group) CPU() float64 {
	if g.dir != "" {
		if g.v2 {
			b, _ := os.ReadFile(filepath.Join(g.dir, "cpu.stat"))
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
					n, _ := strconv.ParseFloat(v, 64)
					return n / 1e6
				}
			}
			return 0
		}
		b, _ := os.ReadFile(filepath.Join(g.dir, "cpuacct.usage"))
		n, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		return n / 1e9
	}
	var ticks float64
	for _, p := range processTree(g.pid) {
		_, t, _ := procStat(p)
		ticks += t
	}
	return ticks / 100 // USER_HZ
}

// Pids lists the processes in the group (or the tree of the main process).
func (g *Group) Pids() []int {
	if g.dir != "" {
		b, _ := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
		var out []int
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	return processTree(g.pid)
}

// MemKB returns the summed proportional set size of the group's processes
// (shared pages of forked children are not counted N times).
func (g *Group) MemKB() int64 {
	var kb int64
	for _, p := range g.Pids() {
		kb += pssKB(p)
	}
	return kb
}

// Remove deletes the group. Killed processes leave a control group only
// once the kernel has reaped them, so it waits (5 s at most) for the group
// to empty first.
func (g *Group) Remove() {
	if g.dir != "" {
		for deadline := time.Now().Add(5 * time.Second); len(g.Pids()) > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		os.Remove(g.dir)
		os.Remove(filepath.Dir(g.dir)) // the bench's base, once empty
	}
}

// Sample measures a group over one run: CPU seconds used and peak memory,
// sampled every 200 ms.
type Sample struct {
	g      *Group
	cpu0   float64
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	peakKB int64
}

// StartSample begins measuring g.
func StartSample(g *Group) *Sample {
	s := &Sample{g: g, cpu0: g.CPU(), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			kb := g.MemKB()
			s.mu.Lock()
			s.peakKB = max(s.peakKB, kb)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

// Stop ends the sample: CPU seconds since StartSample and peak memory in MB.
func (s *Sample) Stop() (cpu float64, peakMB float64) {
	close(s.stop)
	<-s.done
	kb := s.g.MemKB() // a last look
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.g.CPU() - s.cpu0, float64(max(s.peakKB, kb)) / 1024
}

// procStat reads ppid and utime+stime+cutime+cstime (ticks) of pid.
func procStat(pid int) (ppid int, ticks float64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 15 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	for _, k := range []int{11, 12, 13, 14} {
		v, _ := strconv.ParseFloat(f[k], 64)
		ticks += v
	}
	return ppid, ticks, true
}

// processTree returns root and its live descendants.
func processTree(root int) []int {
	if root <= 0 {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, _, ok := procStat(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// pssKB reads a process's proportional set size (RSS if PSS is not there).
func pssKB(pid int) int64 {
	for _, f := range []struct{ file, key string }{{"smaps_rollup", "Pss:"}, {"status", "VmRSS:"}} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, f.file))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), f.key); ok {
				fh.Close()
				n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
				return n
			}
		}
		fh.Close()
	}
	return 0
}

// RSSKB reads a process's resident set size (VmHWM: its peak, if peak).
func RSSKB(pid int, peak bool) int64 {
	key := "VmRSS:"
	if peak {
		key = "VmHWM:"
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// MachineBusy returns the machine's busy CPU seconds so far (all cores),
// to tell how much else ran during a measurement.
func MachineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var total, idle float64
	for i, x := range f[1:] {
		if i >= 7 { // steal, guest, guest_nice
			break
		}
		v, _ := strconv.ParseFloat(x, 64)
		total += v
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return (total - idle) / 100
}

// Add moves running processes into the group (a server the bench did
// not start through Command); what they fork from then on is in it too.
// Without a group, the first becomes the main process whose tree is
// counted.
func (g *Group) Add(pids ...int) error {
	if g.dir == "" {
		if len(pids) > 0 {
			g.pid = pids[0]
		}
		return nil
	}
	for _, pid := range pids {
		err := os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
		if err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("move process %d into control group %s: %w", pid, g.dir, err)
		}
	}
	return nil
}

// PinToCPUs moves every thread of process pid to the CPUs of list (a
// taskset -c list: "1", "1-3", "0,2"); what it starts or clones later
// inherits the mask. "" leaves the affinity alone, and so does a process
// that has ended.
func PinToCPUs(pid int, list string) error {
	if list == "" {
		return nil
	}
	var set unix.CPUSet
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a || b >= 1024 {
			return fmt.Errorf("CPU list %q: %q is not a CPU or range", list, part)
		}
		for cpu := a; cpu <= b; cpu++ {
			set.Set(cpu)
		}
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if errors.Is(err, os.ErrNotExist) {
		return nil // it has ended: nothing to pin
	}
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pin process %d to CPUs %s: %w", pid, list, err)
		}
	}
	return nil
}

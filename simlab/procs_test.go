package simlab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestStopPid(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(waited) }()
	pid := cmd.Process.Pid
	pidFile := filepath.Join(dir, "sleep.pid")
	if err := writePidFile(pidFile, pid); err != nil {
		t.Fatal(err)
	}
	// Right after fork the child may not have exec'd sleep yet.
	for i := 0; i < 100 && !processMatches(pid, "sleep", "300"); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if !processAlive(pid) || !processMatches(pid, "sleep", "300") {
		t.Fatalf("pid %d: alive %v, matches %v", pid, processAlive(pid), processMatches(pid, "sleep", "300"))
	}
	// A pid file whose process is not the one described is left alone.
	if err := stopPid(pidFile, time.Second, "not-sleep"); err != nil {
		t.Fatal(err)
	}
	if !processAlive(pid) {
		t.Fatal("stopPid killed a process that did not match")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Error("stopPid kept a stale pid file")
	}
	_ = writePidFile(pidFile, pid)
	if err := stopPid(pidFile, time.Second, "sleep", "300"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("sleep still running after stopPid")
	}
	if processAlive(pid) {
		t.Error("processAlive says a reaped process runs")
	}
	// Missing and malformed pid files are not errors.
	if err := stopPid(filepath.Join(dir, "none.pid"), 0); err != nil {
		t.Error(err)
	}
	_ = os.WriteFile(pidFile, []byte("garbage"), 0o644)
	if err := stopPid(pidFile, 0); err != nil {
		t.Error(err)
	}
}

func TestProcessAliveZombie(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Not reaped yet: a zombie once it exits, which counts as dead.
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if processAlive(pid) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		t.Errorf("exited, unreaped child counts as alive: %s", b)
	}
	_ = cmd.Wait()
}

package simlab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Pid files: `simlab down` stops exactly what `simlab up` started by reading
// them, never by process name. A pid is trusted only while its command line
// still names the binary and node directory it was written for, so a pid
// reused by an unrelated process is left alone.

func writePidFile(path string, pid int) error {
	return os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644)
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid file %s: bad pid %q", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// processAlive reports whether pid runs; a zombie (exited, not yet reaped by
// its parent) counts as dead.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3, after the parenthesised command name, is the state.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}

// processMatches reports whether pid's command line contains every one of
// the given words (as whole arguments or substrings of them).
func processMatches(pid int, words ...string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	cmdline := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
	for _, w := range words {
		if !strings.Contains(cmdline, w) {
			return false
		}
	}
	return true
}

// stopPid stops the process in pidFile if it still is the one described by
// words: SIGTERM, then SIGKILL after grace. It removes the pid file.
func stopPid(pidFile string, grace time.Duration, words ...string) error {
	pid, err := readPidFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		os.Remove(pidFile)
		return nil
	}
	defer os.Remove(pidFile)
	if !processAlive(pid) || !processMatches(pid, words...) {
		return nil
	}
	if grace > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if waitDead(pid, grace) {
			return nil
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if !waitDead(pid, 3*time.Second) {
		return fmt.Errorf("stop %s (pid %d): still running after SIGKILL", filepath.Base(pidFile), pid)
	}
	return nil
}

// waitDead polls until pid is gone (or a zombie) or d passes.
func waitDead(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !processAlive(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

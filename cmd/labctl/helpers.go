package main

// Helpers of several commands, the run command among them: this file is
// built into labctl-run too (commands_run.go).

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/labctl/labctl/internal/statedir"
)

// lockNode makes sure that nothing else drives node without a daemon:
// that no labctl serve owns the lab (its jobs and health checks would take
// the node and its console from the command's), and that no other labctl
// run or console --direct has the node. It takes a shared lock on the state
// directory's lock file (serve takes it exclusively) and an exclusive one
// on STATE/devices/NODE/console.lock. cmd names the command in errors,
// viaServe says what to do instead while a daemon owns the lab. Where
// there are no file locks (not unix) it locks nothing.
func lockNode(stateDir, node, cmd, viaServe string) (func(), error) {
	dir := filepath.Join(stateDir, "devices", node)
	if err := os.MkdirAll(dir, statedir.DirMode); err != nil {
		return nil, fmt.Errorf("%s: state directory: %w", cmd, err)
	}
	labLock, err := os.OpenFile(filepath.Join(stateDir, "labctl.lock"), os.O_RDONLY|os.O_CREATE, statedir.FileMode)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	if err := tryLock(labLock, false); errors.Is(err, errors.ErrUnsupported) {
		labLock.Close()
		return func() {}, nil
	} else if err != nil {
		b, _ := io.ReadAll(labLock)
		labLock.Close()
		holder := "a labctl serve"
		if pid := strings.TrimSpace(string(b)); pid != "" {
			holder += " (pid " + pid + ")"
		}
		return nil, fmt.Errorf("%s: %s owns the lab in %s: %s", cmd, holder, stateDir, viaServe)
	}
	nodeLock, err := os.OpenFile(filepath.Join(dir, "console.lock"), os.O_RDWR|os.O_CREATE, statedir.FileMode)
	if err != nil {
		labLock.Close()
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	if err := tryLock(nodeLock, true); err != nil {
		b, _ := io.ReadAll(nodeLock)
		nodeLock.Close()
		labLock.Close()
		return nil, fmt.Errorf("%s: another labctl run or console --direct has %s (pid %s)", cmd, node, cmp.Or(strings.TrimSpace(string(b)), "?"))
	}
	nodeLock.Truncate(0)
	fmt.Fprintf(nodeLock, "%d\n", os.Getpid())
	return func() {
		nodeLock.Truncate(0)
		nodeLock.Close()
		labLock.Close()
	}, nil
}

// writeFileAll writes a file, making its directory.
func writeFileAll(path string, data []byte) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, data, 0o644)
}

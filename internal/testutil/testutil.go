// Package testutil holds small helpers that tests of several packages
// share. It imports nothing of the project, so that any package's tests,
// internal ones included, may use it.
package testutil

import (
	"bytes"
	"os"
	"sync"
	"testing"
)

// SkipOrFail skips the test naming the real part it lacks (a program, root,
// artifacts), or fails it when LABCTL_REQUIRE_SIMLAB=1: make test installs
// every part, so there a missing one is a defect, not a reason to skip.
func SkipOrFail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("LABCTL_REQUIRE_SIMLAB") == "1" {
		t.Fatalf("required part missing (LABCTL_REQUIRE_SIMLAB=1): %v", err)
	}
	t.Skipf("SKIPPED: %v", err)
}

// SyncBuffer is a bytes.Buffer that goroutines may write while a test
// reads it: a log, transcript or output destination. The zero value is
// ready to use.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the buffer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Package nfstest runs a real nfs-ganesha server for tests (nfs.StartServer
// in a temporary directory), stopped when the test ends.
package nfstest

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/nfs"
)

// Start starts ganesha.nfsd on a free loopback port. Without the program,
// or not as root, the test skips, or fails when LABCTL_REQUIRE_SIMLAB=1.
func Start(t testing.TB) *nfs.Server {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipOrFail(t, errors.New("nfs-ganesha needs root"))
	}
	s, err := nfs.StartServer(context.Background(), t.TempDir(), false)
	if err != nil {
		if errors.Is(err, nfs.ErrNotInstalled) {
			testutil.SkipOrFail(t, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			lines := strings.Split(s.Log(), "\n")
			t.Logf("ganesha log (tail):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return s
}

package nfs_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labctl/labctl/nfs"
	"github.com/labctl/labctl/nfs/nfstest"
)

// Against a real nfs-ganesha: an export appears in the server's export
// list after its reload, restricted to the client, read-only; a second
// export of the same directory gets its own pseudo path and ID;
// withdrawing one leaves the other; a server that is not running is named
// as such, and leaves no export file behind.
func TestGaneshaExports(t *testing.T) {
	srv := nfstest.Start(t)
	g, err := nfs.NewGanesha(srv.Config, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello"), []byte("hi\n"), 0o644)
	ctx := context.Background()
	client := netip.MustParseAddr("127.0.0.1")

	a, err := g.Export(ctx, dir, client)
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Export(ctx, dir, netip.MustParseAddr("10.1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() == b.ID() || a.Pseudo() == b.Pseudo() {
		t.Errorf("two exports share id %d or pseudo %s", a.ID(), a.Pseudo())
	}
	if !strings.HasPrefix(a.Source(), "127.0.0.1:/labctl/") || !strings.Contains(a.Options(), "vers=4.1") {
		t.Errorf("source %q options %q", a.Source(), a.Options())
	}
	live := srv.LiveExports()
	if !slices.Contains(live, a.Pseudo()) || !slices.Contains(live, b.Pseudo()) {
		t.Fatalf("server exports %v, want %s and %s", live, a.Pseudo(), b.Pseudo())
	}
	log := srv.Log()
	if !strings.Contains(log, "NETWORK_CLIENT: 10.1.2.3/32") || !strings.Contains(log, "with path ("+dir+")") {
		t.Errorf("server log does not show the export of %s to 10.1.2.3", dir)
	}

	if err := a.Withdraw(); err != nil {
		t.Fatal(err)
	}
	live = srv.LiveExports()
	if slices.Contains(live, a.Pseudo()) || !slices.Contains(live, b.Pseudo()) {
		t.Errorf("after withdrawing %s the server exports %v", a.Pseudo(), live)
	}
	if err := a.Withdraw(); err != nil {
		t.Errorf("second withdraw: %v", err)
	}
	if err := b.Withdraw(); err != nil {
		t.Fatal(err)
	}
	if live := srv.LiveExports(); slices.Contains(live, b.Pseudo()) {
		t.Errorf("after withdrawing all the server exports %v", live)
	}

	srv.Stop()
	_, err = g.Export(ctx, dir, client)
	if err == nil || !strings.Contains(err.Error(), "nfs-ganesha is not running") {
		t.Fatalf("export with the server stopped: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(srv.Config.ExportsDir, "labctl-*"))
	if len(files) != 0 || len(g.Exports()) != 0 {
		t.Errorf("export files left: %v %v", files, g.Exports())
	}
}

// A labctl that stopped without withdrawing its exports: the next one
// removes them from the server at start; while one runs, another is
// refused.
func TestGaneshaLeftovers(t *testing.T) {
	srv := nfstest.Start(t)
	g, err := nfs.NewGanesha(srv.Config, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := g.Export(context.Background(), t.TempDir(), netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(srv.LiveExports(), e.Pseudo()) {
		t.Fatalf("export %s not live", e.Pseudo())
	}
	if _, err := nfs.NewGanesha(srv.Config, nil); err == nil || !strings.Contains(err.Error(), "another labctl manages the exports") {
		t.Fatalf("a second manager of the same directory: %v", err)
	}
	g.Close()
	g2, err := nfs.NewGanesha(srv.Config, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	if live := srv.LiveExports(); slices.Contains(live, e.Pseudo()) {
		t.Errorf("left-over export %s still live: %v", e.Pseudo(), live)
	}
}

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
// list after its reload, restricted to the client, read-only; another
// export of the same directory is the same export (nfs-ganesha wants each
// path exported once) letting its client in too, and one for a client
// already in costs no reload; withdrawing takes a client out only when
// no export holds it and the directory out with the last one; another
// directory is an export of its own; a server that is not running is
// named as such, and leaves no export file behind.
func TestGaneshaExports(t *testing.T) {
	srv := nfstest.Start(t)
	g, err := nfs.NewGanesha(srv.Config, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir, other := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello"), []byte("hi\n"), 0o644)
	ctx := context.Background()
	local, remote := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.2.3")
	reloads := func() int { return strings.Count(srv.Log(), "Reread exports complete") }

	a, err := g.Export(ctx, dir, local)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.Source(), "127.0.0.1:/labctl/") || !strings.Contains(a.Options(), "vers=4.1") {
		t.Errorf("source %q options %q", a.Source(), a.Options())
	}
	b, err := g.Export(ctx, dir, remote)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() != b.ID() || a.Pseudo() != b.Pseudo() {
		t.Errorf("one directory exported twice: ids %d, %d, pseudo %s, %s", a.ID(), b.ID(), a.Pseudo(), b.Pseudo())
	}
	n := reloads()
	c, err := g.Export(ctx, dir, local)
	if err != nil {
		t.Fatal(err)
	}
	if reloads() != n || c.Pseudo() != a.Pseudo() {
		t.Errorf("an export to a client already let in: %d reloads (want 0), pseudo %s", reloads()-n, c.Pseudo())
	}
	d, err := g.Export(ctx, other, local)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID() == a.ID() || d.Pseudo() == a.Pseudo() {
		t.Errorf("two directories share id %d or pseudo %s", d.ID(), d.Pseudo())
	}
	if live := labctlExports(srv); len(live) != 2 || !slices.Contains(live, a.Pseudo()) || !slices.Contains(live, d.Pseudo()) {
		t.Fatalf("server exports %v, want %s and %s", live, a.Pseudo(), d.Pseudo())
	}
	if cl := clientsOf(srv.Log(), dir); !slices.Equal(cl, []string{"10.1.2.3", "127.0.0.1"}) {
		t.Errorf("%s exported to %v, want 10.1.2.3 and 127.0.0.1", dir, cl)
	}

	if err := a.Withdraw(); err != nil {
		t.Fatal(err)
	}
	if cl := clientsOf(srv.Log(), dir); !slices.Equal(cl, []string{"10.1.2.3", "127.0.0.1"}) {
		t.Errorf("withdrawn while another export holds 127.0.0.1: %s exported to %v", dir, cl)
	}
	if err := a.Withdraw(); err != nil {
		t.Errorf("second withdraw: %v", err)
	}
	if err := c.Withdraw(); err != nil {
		t.Fatal(err)
	}
	if cl := clientsOf(srv.Log(), dir); !slices.Equal(cl, []string{"10.1.2.3"}) {
		t.Errorf("after the last export to 127.0.0.1 went, %s exported to %v", dir, cl)
	}
	if live := srv.LiveExports(); !slices.Contains(live, b.Pseudo()) {
		t.Errorf("after withdrawing two of three the server exports %v", live)
	}
	if err := b.Withdraw(); err != nil {
		t.Fatal(err)
	}
	if live := labctlExports(srv); !slices.Equal(live, []string{d.Pseudo()}) {
		t.Errorf("after withdrawing every export of %s the server exports %v", dir, live)
	}
	if err := d.Withdraw(); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	_, err = g.Export(ctx, dir, local)
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

// clientsOf returns the clients the server lets at dir's export, as its
// log lists them after its last reload.
func clientsOf(log, dir string) []string {
	if i := strings.LastIndex(log, "Exports after update"); i >= 0 {
		log = log[i:]
	}
	var out []string
	in := false
	for _, l := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(l, ":EXPORT :INFO :Export "):
			in = strings.Contains(l, "with path ("+dir+")")
		case in && strings.Contains(l, "NETWORK_CLIENT: "):
			_, rest, _ := strings.Cut(l, "NETWORK_CLIENT: ")
			c, _, _ := strings.Cut(rest, "/")
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// labctlExports returns the server's live exports under /labctl.
func labctlExports(srv *nfs.Server) []string {
	var out []string
	for _, p := range srv.LiveExports() {
		if strings.HasPrefix(p, "/labctl/") {
			out = append(out, p)
		}
	}
	return out
}

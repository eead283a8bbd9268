package netboot

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/netboot/tftp/tftptest"
)

// TestShutdownWithStalledTFTPClient starts a transfer whose client never
// ACKs and one whose client sleeps, then stops the server. Serve must return
// at once (not after timeout × retries), both transfers must be gone, and
// each client must have been told with an ERROR packet instead of being left
// to time out.
func TestShutdownWithStalledTFTPClient(t *testing.T) {
	// A retransmission timeout long enough that waiting for even one of
	// them shows: the bound below is the timers', not a guess at how soon
	// a busy machine returns.
	const (
		grace   = 200 * time.Millisecond
		timeout = 2 * time.Second
		retries = 4
	)
	ts := startServer(t, func(c *Config) {
		c.ShutdownGrace = grace
		c.TFTP.Timeout = timeout
		c.TFTP.Retries = retries
	})
	stalled := dialRaw(t)
	defer stalled.Close()
	sleeper := dialRaw(t)
	defer sleeper.Close()
	srv := ts.TFTPAddr().(*net.UDPAddr)
	for _, c := range []*net.UDPConn{stalled, sleeper} {
		if _, err := c.WriteToUDP(tftptest.RRQ("master/vmlinuz"), srv); err != nil {
			t.Fatal(err)
		}
	}
	first, err := tftptest.Read(stalled, 2*time.Second)
	if err != nil || first.Op != 3 || first.Block != 1 {
		t.Fatalf("stalled client: first packet op %d block %d err %v", first.Op, first.Block, err)
	}
	wake, err := tftptest.Read(sleeper, 2*time.Second)
	if err != nil || wake.Op != 3 || wake.Block != 1 {
		t.Fatalf("sleeping client: first packet op %d block %d err %v", wake.Op, wake.Block, err)
	}
	waitFor(t, "two active transfers", 10*time.Second, func() bool { return ts.tftp.Active() == 2 })

	took := ts.stop(t)
	if took >= timeout {
		t.Fatalf("Serve took %v to return with a stalled client; grace is %v, the transfers' timeout %v", took, grace, timeout)
	}
	t.Logf("Serve returned %v after cancel", took)
	if n := ts.tftp.Active(); n != 0 {
		t.Fatalf("%d transfers still active after Serve returned", n)
	}

	// Both clients find an ERROR saying why, after at most retransmissions
	// of block 1 that crossed the shutdown. The sleeper's late ACK reaches
	// a closed port and changes nothing.
	sleeper.WriteToUDP([]byte{0, 4, 0, 1}, wake.From)
	for name, c := range map[string]*net.UDPConn{"stalled": stalled, "sleeping": sleeper} {
		for {
			p, err := tftptest.Read(c, 2*time.Second)
			if err != nil {
				t.Fatalf("%s client after shutdown: %v", name, err)
			}
			if p.Op == 3 && p.Block == 1 {
				continue
			}
			if p.Op != 5 || !strings.Contains(p.Msg, "shutting down") {
				t.Fatalf("%s client after shutdown: op %d block %d msg %q, want ERROR shutting down", name, p.Op, p.Block, p.Msg)
			}
			break
		}
	}
}

func dialRaw(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServeStopsPromptlyWhenIdle checks the ordinary case: no transfers,
// Serve returns at once and the ports are free again.
func TestServeStopsPromptlyWhenIdle(t *testing.T) {
	// Promptly: without waiting out the shutdown grace, which is long
	// here so that the bound is the timer's, not a guess at how soon a
	// busy machine returns.
	const grace = 5 * time.Second
	ts := startServer(t, func(c *Config) { c.ShutdownGrace = grace })
	udp, tcp := ts.tftpAddr(), ts.HTTPAddr().String()
	if took := ts.stop(t); took >= grace {
		t.Fatalf("idle Serve took %v to return (grace %v)", took, grace)
	}
	c, err := net.ListenPacket("udp", udp)
	if err != nil {
		t.Fatalf("TFTP port still taken: %v", err)
	}
	c.Close()
	l, err := net.Listen("tcp", tcp)
	if err != nil {
		t.Fatalf("HTTP port still taken: %v", err)
	}
	l.Close()
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]Config{
		"no root":        {TFTPAddr: "127.0.0.1:0"},
		"missing root":   {Root: dir + "/nope", TFTPAddr: "127.0.0.1:0"},
		"no listeners":   {Root: dir},
		"tiny blocks":    {Root: dir, TFTPAddr: "127.0.0.1:0", TFTP: TFTPSettings{MaxBlockSize: 100}},
		"bad http url":   {Root: dir, HTTPAddr: "127.0.0.1:0", HTTPURL: "ftp://x"},
		"url, no http":   {Root: dir, TFTPAddr: "127.0.0.1:0", HTTPURL: "http://x"},
		"bad tftp addr":  {Root: dir, TFTPAddr: "127.0.0.1:notaport"},
		"negative grace": {Root: dir, TFTPAddr: "127.0.0.1:0", ShutdownGrace: -1},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := New(cfg, nil)
			if err == nil {
				s.Close()
				t.Fatal("accepted")
			}
		})
	}
	// A port in use is reported by New, before any job starts.
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if s, err := New(Config{Root: dir, TFTPAddr: busy.LocalAddr().String()}, nil); err == nil {
		s.Close()
		t.Fatal("busy TFTP port accepted")
	} else if !strings.Contains(err.Error(), "tftp listen") {
		t.Fatalf("error %q does not say which listener", err)
	}
}

package api

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// The API's listener holds at most its cap of connections (the next waits
// to be accepted until one closes) and at most the per-client cap from one
// address (the next is closed at once); a closed connection frees both.
func TestConnCap(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newConnCap(tcp, 3, 2, slog.New(slog.DiscardHandler))
	l.exempt = func(netip.Addr) bool { return false } // the test's clients are all on loopback
	accepted := make(chan net.Conn, 10)
	go func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for c := range accepted {
			c.Close()
		}
	})
	dial := func(from string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", tcp.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	next := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(time.Minute):
			t.Fatal("no connection accepted")
			return nil
		}
	}
	dial("127.0.0.1")
	dial("127.0.0.1")
	a, _ := next(), next()

	// A third from the same address is closed unanswered.
	over := dial("127.0.0.1")
	over.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := over.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a connection over the per-client cap: read %v, want it closed", err)
	}

	// Another address takes the last slot; the one after waits for a
	// slot and is accepted once a connection closes.
	dial("127.0.0.2")
	two := next()
	dial("127.0.0.3")
	select {
	case <-accepted:
		t.Fatal("a connection beyond the cap was accepted")
	default:
	}
	a.Close()
	next()

	// a's close gave its address a place again: the next connection from
	// 127.0.0.1 waits for a slot like any other, and is not refused.
	dial("127.0.0.1")
	two.Close()
	next()
	l.mu.Lock()
	n := l.byClient[netip.MustParseAddr("127.0.0.1")]
	l.mu.Unlock()
	if n != 2 {
		t.Errorf("connections counted from 127.0.0.1: %d, want 2", n)
	}
}

package api

import (
	"crypto/tls"
	"log/slog"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// A console connection's small send buffer reaches the socket through the
// connection cap and TLS: without it a stopped viewer's socket swallows
// megabytes before the broker's bounded buffer notices.
func TestSendBufferThroughWrappers(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newConnCap(tcp, 4, 4, slog.New(slog.DiscardHandler))
	defer l.Close()
	for _, wrap := range []string{"cap", "cap+tls"} {
		c, err := net.Dial("tcp", tcp.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		under := s.(*cappedConn).Conn.(*net.TCPConn)
		if wrap == "cap+tls" {
			s = tls.Server(s, &tls.Config{})
		}
		if err := setSendBuffer(s, consoleSocketBuffer); err != nil {
			t.Fatalf("%s: %v", wrap, err)
		}
		raw, err := under.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var got int
		raw.Control(func(fd uintptr) { got, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) })
		if err != nil {
			t.Fatal(err)
		}
		// Linux doubles the size asked for its own bookkeeping.
		if got > 2*consoleSocketBuffer {
			t.Errorf("%s: SO_SNDBUF %d, want at most %d", wrap, got, 2*consoleSocketBuffer)
		}
	}
	if err := setSendBuffer(&net.UnixConn{}, 1); err == nil {
		t.Error("a connection that is not TCP: no error")
	}
}

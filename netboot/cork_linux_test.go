package netboot

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReadFromCorksTheBody: the sendfile path sends a file whole over a
// real TCP connection with the socket corked, and uncorks it when the
// body has gone, so that the next response on a kept-alive connection
// is not held back.
func TestReadFromCorksTheBody(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+7) // not a whole number of segments
	path := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	corked := func() int {
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		v := -1
		rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK) })
		return v
	}
	var during int
	bc := &boundConn{Conn: &watchConn{TCPConn: c.(*net.TCPConn), each: func() { during = max(during, corked()) }}, stall: time.Minute}
	if n, err := bc.ReadFrom(&io.LimitedReader{R: f, N: int64(len(data))}); err != nil || n != int64(len(data)) {
		t.Fatalf("ReadFrom = %d, %v; want %d bytes", n, err, len(data))
	}
	if during != 1 {
		t.Errorf("TCP_CORK while the body went = %d, want 1", during)
	}
	if v := corked(); v != 0 {
		t.Errorf("TCP_CORK after the body = %d, want 0 (the tail would wait)", v)
	}
	c.Close()
	if b := <-got; !bytes.Equal(b, data) {
		t.Errorf("the client got %d bytes, want the %d of the file", len(b), len(data))
	}
}

// watchConn calls each before every chunk the sendfile path hands it.
type watchConn struct {
	*net.TCPConn
	each func()
}

func (c *watchConn) ReadFrom(r io.Reader) (int64, error) {
	c.each()
	return c.TCPConn.ReadFrom(r)
}

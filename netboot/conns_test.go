package netboot

import (
	"bytes"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// chunkConn is a connection whose sendfile path (ReadFrom) records the
// chunks it is handed and can miss a deadline once, after moving some
// bytes.
type chunkConn struct {
	net.Conn
	out       bytes.Buffer
	chunks    []int64
	missAfter int64 // > 0: the first chunk moves this much, then misses its deadline
}

func (c *chunkConn) SetWriteDeadline(time.Time) error { return nil }

func (c *chunkConn) ReadFrom(r io.Reader) (int64, error) {
	c.chunks = append(c.chunks, r.(*io.LimitedReader).N)
	if c.missAfter > 0 {
		n, _ := io.CopyN(&c.out, r, c.missAfter)
		c.missAfter = 0
		return n, os.ErrDeadlineExceeded
	}
	return io.Copy(&c.out, r)
}

// TestBoundConnChunks: a fast client's sendfile chunks grow from
// stallChunk to maxSendChunk; a chunk that misses its deadline after
// moving stallChunk or more goes on with stallChunk, one that moved less
// is a stall.
func TestBoundConnChunks(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (24<<20)/16)
	send := func(c *chunkConn) (int64, error, *boundConn) {
		bc := &boundConn{Conn: c, stall: time.Minute}
		n, err := bc.ReadFrom(&io.LimitedReader{R: bytes.NewReader(data), N: int64(len(data))})
		return n, err, bc
	}

	c := &chunkConn{}
	n, err, bc := send(c)
	if err != nil || n != int64(len(data)) || !bytes.Equal(c.out.Bytes(), data) || bc.stalled.Load() {
		t.Fatalf("sent %d of %d bytes, err %v, stalled %v", n, len(data), err, bc.stalled.Load())
	}
	want := []int64{stallChunk, 2 * stallChunk, 4 * stallChunk, 8 * stallChunk, maxSendChunk}
	for i, w := range want {
		if i >= len(c.chunks) || c.chunks[i] != w {
			t.Fatalf("chunks %v, want them to start %v", c.chunks, want)
		}
	}

	c = &chunkConn{missAfter: stallChunk}
	n, err, bc = send(c)
	if err != nil || n != int64(len(data)) || !bytes.Equal(c.out.Bytes(), data) || bc.stalled.Load() {
		t.Fatalf("after a slow chunk: sent %d of %d bytes, err %v, stalled %v", n, len(data), err, bc.stalled.Load())
	}
	if len(c.chunks) < 2 || c.chunks[1] != stallChunk {
		t.Fatalf("chunks after a missed deadline %v, want stallChunk again", c.chunks)
	}

	c = &chunkConn{missAfter: stallChunk - 1}
	n, err, bc = send(c)
	if err == nil || n != stallChunk-1 || !bc.stalled.Load() {
		t.Fatalf("a stall: sent %d, err %v, stalled %v", n, err, bc.stalled.Load())
	}
}

package netboot

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// stallChunk is what a transfer must move every StallTimeout, 4.4 KB/s
// at the default, or its connection is closed.
const stallChunk = 256 << 10

// maxSendChunk is the most the HTTP side hands the kernel (sendfile)
// under one write deadline. A connection starts at stallChunk and doubles
// its chunk while chunks finish well within the deadline: a fast client
// costs one deadline and one sendfile call per 4 MiB, not per 256 KiB.
const maxSendChunk = 4 << 20

// refuseTimeout bounds how long a connection over a cap is kept to tell
// its client so (read the request, answer 503).
const refuseTimeout = 5 * time.Second

// connLimiter is the HTTP listener: it counts the connections open, in
// all and per client address, and marks those beyond a cap as refused
// (ServeHTTP answers them 503 and closes them). Its connections give every
// write a deadline of StallTimeout from its start.
type connLimiter struct {
	net.Listener
	stall     time.Duration
	max       int
	perClient int // < 0: no per-client cap
	// exempt says which clients the per-client cap does not apply to:
	// loopback ones, which are one address for many clients (simlab's
	// QEMU user-mode network reaches the server from 127.0.0.1 for every
	// node). The total cap still applies.
	exempt func(netip.Addr) bool

	mu       sync.Mutex
	open     int
	byClient map[netip.Addr]int
	// refusing counts refused connections not yet closed; past max more
	// are closed at once, unanswered.
	refusing atomic.Int64
	dropped  atomic.Int64 // closed unanswered since the last log line
}

func newConnLimiter(l net.Listener, h HTTPSettings) *connLimiter {
	return &connLimiter{
		Listener:  l,
		stall:     h.StallTimeout,
		max:       h.MaxConns,
		perClient: h.MaxConnsPerClient,
		exempt:    netip.Addr.IsLoopback,
		byClient:  map[netip.Addr]int{},
	}
}

// Accept returns the next connection, refused (see boundConn.refused) if
// it is over a cap.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client := remoteAddr(c)
		bc := &boundConn{Conn: c, l: l, client: client, stall: l.stall}
		if why := l.admit(client); why != "" {
			if l.refusing.Add(1) > int64(l.max) {
				l.refusing.Add(-1)
				l.dropped.Add(1)
				c.Close()
				continue
			}
			bc.refused, bc.stall = why, refuseTimeout
			bc.cutoff = time.AfterFunc(refuseTimeout, func() { c.Close() })
		}
		return bc, nil
	}
}

// admit counts a new connection from client, or says which cap it is over.
func (l *connLimiter) admit(client netip.Addr) (over string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	capped := l.perClient >= 0 && !(l.exempt != nil && l.exempt(client))
	switch {
	case l.open >= l.max:
		return "too many connections"
	case capped && l.byClient[client] >= l.perClient:
		return "too many connections from " + client.String()
	}
	l.open++
	l.byClient[client]++
	return ""
}

func (l *connLimiter) release(client netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if n := l.byClient[client] - 1; n > 0 {
		l.byClient[client] = n
	} else {
		delete(l.byClient, client)
	}
}

// Open is the number of connections counted against the caps.
func (l *connLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// remoteAddr is the connection's client address, IPv4 unmapped.
func remoteAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// boundConn is one HTTP connection. Each write, and each stallChunk of a
// sendfile, must finish within stall; a client that stops reading is cut
// off then, while a multi-gigabyte image that keeps moving never is.
type boundConn struct {
	net.Conn
	l       *connLimiter
	client  netip.Addr
	stall   time.Duration
	refused string      // why the connection is over a cap; "" if admitted
	cutoff  *time.Timer // closes a refused connection after refuseTimeout
	stalled atomic.Bool // a write missed its deadline
	closed  atomic.Bool
	chunk   io.LimitedReader // ReadFrom's, reused
	size    int64            // ReadFrom's chunk now: stallChunk..maxSendChunk
}

func (c *boundConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.stall))
	n, err := c.Conn.Write(p)
	c.note(err)
	return n, err
}

// ReadFrom keeps http.ServeContent's zero-copy path (sendfile from an
// *os.File, whole or under an *io.LimitedReader) while renewing the write
// deadline every chunk. A chunk that misses its deadline after moving at
// least stallChunk bytes is no stall: the client slowed down, and goes on
// with chunks of stallChunk.
func (c *boundConn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{c}, r)
	}
	if c.size == 0 {
		c.size = stallChunk
	}
	// Full segments only while the body goes (nginx's tcp_nopush): the
	// kernel sends what each sendfile leaves past its last full segment
	// with the next one, not as a small segment of its own. The rest is
	// flushed when the body has gone.
	defer cork(c.Conn)()
	lr, limited := r.(*io.LimitedReader)
	var total int64
	for {
		c.chunk = io.LimitedReader{R: r, N: c.size}
		if limited {
			if lr.N <= 0 {
				return total, nil
			}
			c.chunk = io.LimitedReader{R: lr.R, N: min(lr.N, c.size)}
		}
		want := c.chunk.N
		start := time.Now()
		c.Conn.SetWriteDeadline(start.Add(c.stall))
		n, err := rf.ReadFrom(&c.chunk)
		total += n
		if limited {
			lr.N -= n
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && n >= stallChunk {
				c.size = stallChunk
				continue
			}
			c.note(err)
			return total, err
		}
		if n < want { // the source ended
			return total, nil
		}
		if time.Since(start) < c.stall/8 {
			c.size = min(2*c.size, maxSendChunk)
		}
	}
}

// note records a missed write deadline.
func (c *boundConn) note(err error) {
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.stalled.Store(true)
	}
}

// CloseWrite lets the HTTP server half-close the connection (it does so
// before closing one with an unread request body).
func (c *boundConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close closes the connection and gives back its place; idempotent.
func (c *boundConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		if c.refused != "" {
			c.cutoff.Stop()
			c.l.refusing.Add(-1)
		} else {
			c.l.release(c.client)
		}
	}
	return err
}

// connKey is the request context key of the request's *boundConn.
type connKey struct{}

// connContext is the HTTP server's ConnContext.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// requestConn is the connection r came on, or nil.
func requestConn(r *http.Request) *boundConn {
	c, _ := r.Context().Value(connKey{}).(*boundConn)
	return c
}

// refusalLog logs refused connections: the first at once, then at most a
// line a second with the number refused meanwhile, so a storm cannot
// flood the log.
type refusalLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (rl *refusalLog) log(log *slog.Logger, l *connLimiter, client netip.Addr, why string) {
	rl.mu.Lock()
	now := time.Now()
	if now.Sub(rl.last) < time.Second {
		rl.suppressed++
		rl.mu.Unlock()
		return
	}
	n := rl.suppressed
	rl.last, rl.suppressed = now, 0
	rl.mu.Unlock()
	log.Warn("http: connection refused: 503", "client", client.String(), "reason", why,
		"open", l.Open(), "max", l.max, "max_per_client", l.perClient,
		"refused_meanwhile", n, "closed_unanswered", l.dropped.Swap(0))
}

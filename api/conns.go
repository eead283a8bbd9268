package api

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The API's connection caps, unless Config says otherwise.
const (
	DefaultMaxConns          = 4096
	DefaultMaxConnsPerClient = 256
)

// connCap is the API's listener. At most max connections are open at
// once: Accept waits for one to close, and the connections beyond wait in
// the kernel's backlog, holding no file of the daemon's (whose boot
// server and consoles need them). At most perClient come from one address
// (more are closed at once), except from exempt addresses: loopback,
// where every local client shares one address.
type connCap struct {
	net.Listener
	slots     chan struct{}
	perClient int
	exempt    func(netip.Addr) bool
	log       *slog.Logger

	closeOnce sync.Once
	closed    chan struct{}

	mu       sync.Mutex
	byClient map[netip.Addr]int
	refused  atomic.Int64 // since the last log line
	logged   atomic.Int64 // when that was, Unix nanoseconds
}

func newConnCap(l net.Listener, max, perClient int, log *slog.Logger) *connCap {
	return &connCap{
		Listener: l, slots: make(chan struct{}, max), perClient: perClient,
		exempt: netip.Addr.IsLoopback, log: log,
		closed: make(chan struct{}), byClient: map[netip.Addr]int{},
	}
}

// Accept waits for a free slot, then returns the next connection whose
// address is under its cap.
func (l *connCap) Accept() (net.Conn, error) {
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return nil, net.ErrClosed
		}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.slots
			return nil, err
		}
		addr := netip.Addr{}
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			addr = ap.Addr().Unmap()
		}
		if !l.admit(addr) {
			<-l.slots
			c.Close()
			l.noteRefused(addr)
			continue
		}
		return &cappedConn{Conn: c, l: l, addr: addr}, nil
	}
}

// admit counts a connection from addr, unless that is over its cap.
func (l *connCap) admit(addr netip.Addr) bool {
	if l.exempt(addr) {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byClient[addr] >= l.perClient {
		return false
	}
	l.byClient[addr]++
	return true
}

func (l *connCap) release(addr netip.Addr) {
	if !l.exempt(addr) {
		l.mu.Lock()
		if l.byClient[addr]--; l.byClient[addr] <= 0 {
			delete(l.byClient, addr)
		}
		l.mu.Unlock()
	}
	<-l.slots
}

// noteRefused logs refused connections, at most once a minute.
func (l *connCap) noteRefused(addr netip.Addr) {
	n := l.refused.Add(1)
	now := time.Now().UnixNano()
	last := l.logged.Load()
	if now-last < int64(time.Minute) || !l.logged.CompareAndSwap(last, now) {
		return
	}
	l.refused.Add(-n)
	l.log.Warn("api: connections refused: over the cap of connections from one address", "refused", n, "last_from", addr.String(), "per_client", l.perClient)
}

// Close stops Accept, also one waiting for a slot.
func (l *connCap) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// cappedConn gives its slot back when closed.
type cappedConn struct {
	net.Conn
	l    *connCap
	addr netip.Addr
	once sync.Once
}

// NetConn is the connection the cap counts, as tls.Conn's NetConn is the
// one under TLS.
func (c *cappedConn) NetConn() net.Conn { return c.Conn }

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}

package simlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// front is the node's public IPMI port: a UDP forwarder in front of
// ipmi_sim. Each client address gets its own upstream socket, so ipmi_sim
// sees one stable peer per client and its replies (SOL output included) go
// back to the right client. The front is where the BMC faults live:
//   - silence: every datagram in both directions is dropped until a deadline,
//     like a BMC that stops answering;
//   - kill SOL: a zero-length datagram to every client that spoke SOL
//     recently. ipmitool's SOL loop reads it as the end of the session and
//     exits with "SOL session closed by BMC" (its recv returns 0 bytes).
//
// A lab on a bridge network has the front listen twice on the same address:
// in the host's namespace and in the lab's, where a labctl run with `ip
// netns exec` finds the BMC at the address its device file names.
type front struct {
	log      *slog.Logger
	publics  []*net.UDPConn
	upstream *net.UDPAddr

	// flags reads the boot flags clients set (nil: not read).
	flags *bootFlagReader

	mu          sync.Mutex
	clients     map[string]*frontClient
	silentUntil time.Time
	silenced    int64
}

type frontClient struct {
	public   *net.UDPConn // the socket the client talks to
	addr     *net.UDPAddr
	conn     *net.UDPConn // connected to ipmi_sim
	lastSeen time.Time
	lastSOL  time.Time // last SOL payload datagram from or to this client
}

const (
	frontIdleTimeout = 2 * time.Minute
	frontMaxClients  = 256
)

func newFront(publics []*net.UDPConn, upstream *net.UDPAddr, log *slog.Logger) *front {
	return &front{log: log, publics: publics, upstream: upstream, clients: map[string]*frontClient{}}
}

// serve forwards client datagrams until ctx ends or the public sockets close.
func (f *front) serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		for _, p := range f.publics {
			p.Close()
		}
	}()
	go f.expire(ctx)
	var wg sync.WaitGroup
	for i, p := range f.publics {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.servePublic(ctx, i, p)
		}()
	}
	wg.Wait()
	f.closeAll()
	return nil
}

// servePublic forwards the datagrams of one public socket (index i).
func (f *front) servePublic(ctx context.Context, i int, public *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		n, addr, err := public.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			f.log.Warn("bmc front: read", "err", err)
			continue
		}
		now := time.Now()
		if f.silent(now) {
			continue
		}
		c, err := f.client(ctx, i, addr, now)
		if err != nil {
			f.log.Warn("bmc front: upstream", "client", addr.String(), "err", err)
			continue
		}
		if isSOLPayload(buf[:n]) {
			f.mu.Lock()
			c.lastSOL = now
			f.mu.Unlock()
		} else if f.flags != nil {
			f.flags.fromClient(buf[:n])
		}
		_, _ = c.conn.Write(buf[:n]) // ECONNREFUSED while ipmi_sim starts: the client retries
	}
}

// silent reports (and counts) whether datagrams are being dropped now.
func (f *front) silent(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Before(f.silentUntil) {
		f.silenced++
		return true
	}
	return false
}

func (f *front) client(ctx context.Context, public int, addr *net.UDPAddr, now time.Time) (*frontClient, error) {
	key := fmt.Sprintf("%d/%s", public, addr)
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.clients[key]; ok {
		c.lastSeen = now
		return c, nil
	}
	if len(f.clients) >= frontMaxClients {
		f.evictOldestLocked()
	}
	conn, err := net.DialUDP("udp4", nil, f.upstream)
	if err != nil {
		return nil, err
	}
	c := &frontClient{public: f.publics[public], addr: addr, conn: conn, lastSeen: now}
	f.clients[key] = c
	go f.pump(ctx, c)
	return c, nil
}

// pump forwards ipmi_sim's datagrams for one client back to it.
func (f *front) pump(ctx context.Context, c *frontClient) {
	buf := make([]byte, 65536)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			continue // e.g. ECONNREFUSED from an earlier datagram
		}
		now := time.Now()
		if f.silent(now) {
			continue
		}
		if isSOLPayload(buf[:n]) {
			f.mu.Lock()
			c.lastSOL = now
			f.mu.Unlock()
		} else if f.flags != nil {
			f.flags.fromBMC(buf[:n])
		}
		_, _ = c.public.WriteToUDP(buf[:n], c.addr)
	}
}

func (f *front) expire(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			f.mu.Lock()
			for k, c := range f.clients {
				if now.Sub(c.lastSeen) > frontIdleTimeout {
					c.conn.Close()
					delete(f.clients, k)
				}
			}
			f.mu.Unlock()
		}
	}
}

func (f *front) evictOldestLocked() {
	var oldest string
	for k, c := range f.clients {
		if oldest == "" || c.lastSeen.Before(f.clients[oldest].lastSeen) {
			oldest = k
		}
	}
	if c, ok := f.clients[oldest]; ok {
		c.conn.Close()
		delete(f.clients, oldest)
	}
}

func (f *front) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, c := range f.clients {
		c.conn.Close()
		delete(f.clients, k)
	}
}

// silence drops all traffic for d from now (d <= 0 ends a silence).
func (f *front) silence(d time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d <= 0 {
		f.silentUntil = time.Time{}
	} else {
		f.silentUntil = time.Now().Add(d)
	}
	return f.silentUntil
}

// state returns the silence deadline and the count of dropped datagrams.
func (f *front) state() (time.Time, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.silentUntil, f.silenced
}

// solClients counts the clients that exchanged SOL payload datagrams with
// the BMC within the last minute.
func (f *front) solClients() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.clients {
		if !c.lastSOL.IsZero() && time.Since(c.lastSOL) < time.Minute {
			n++
		}
	}
	return n
}

// endSOLClients sends a zero-length datagram to every client that exchanged
// SOL payload datagrams within the last minute and returns how many it told.
func (f *front) endSOLClients() int {
	f.mu.Lock()
	var targets []*frontClient
	now := time.Now()
	for _, c := range f.clients {
		if !c.lastSOL.IsZero() && now.Sub(c.lastSOL) < time.Minute {
			targets = append(targets, c)
			c.lastSOL = time.Time{}
		}
	}
	f.mu.Unlock()
	for _, c := range targets {
		_, _ = c.public.WriteToUDP(nil, c.addr)
	}
	return len(targets)
}

// isSOLPayload reports whether b is an RMCP+ (IPMI v2.0) datagram carrying
// a SOL payload: RMCP header (class 7 = IPMI), auth type 6 = RMCP+, payload
// type 1 = SOL (the payload type byte is never encrypted).
func isSOLPayload(b []byte) bool {
	return len(b) >= 6 && b[0] == 0x06 && b[3]&0x1f == 0x07 && b[4] == 0x06 && b[5]&0x3f == 0x01
}

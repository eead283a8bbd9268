package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl/netboot/tftp/tftptest"
)

// rawClient is a hand-driven TFTP client for checking the engine packet
// by packet.
type rawClient struct {
	t    *testing.T
	c    *net.UDPConn
	srv  *net.UDPAddr // the listening socket
	peer *net.UDPAddr // the transfer's socket, once it answered
}

func newRawClient(t *testing.T, ts *testServer) *rawClient {
	return &rawClient{t: t, c: dialRaw(t), srv: ts.conn.LocalAddr().(*net.UDPAddr)}
}

func (r *rawClient) close() { r.c.Close() }

func (r *rawClient) rrq(name string, opts ...string) {
	r.t.Helper()
	if _, err := r.c.WriteToUDP(tftptest.RRQ(name, opts...), r.srv); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) ack(block uint16) {
	r.t.Helper()
	if _, err := r.c.WriteToUDP([]byte{0, opACK, byte(block >> 8), byte(block)}, r.peer); err != nil {
		r.t.Fatal(err)
	}
}

// next reads one packet; a read timeout fails the test.
func (r *rawClient) next() tftptest.Packet {
	r.t.Helper()
	p, err := tftptest.Read(r.c, 2*time.Second)
	if err != nil {
		r.t.Fatalf("waiting for a packet: %v", err)
	}
	if r.peer == nil {
		r.peer = p.From
	} else if p.From.Port != r.peer.Port {
		r.t.Fatalf("packet from port %d, transfer is on %d", p.From.Port, r.peer.Port)
	}
	return p
}

// expectData reads blocks first..last in order and checks their content
// against want at block size blk.
func (r *rawClient) expectData(want []byte, blk int, first, last uint16) {
	r.t.Helper()
	for b := first; ; b++ {
		r.checkData(r.next(), want, blk, b)
		if b == last {
			return
		}
	}
}

// expectDataAfterOACK reads DATA block b, skipping copies of the OACK (a
// busy machine's ACK 0 may come after the server sent the OACK again).
func (r *rawClient) expectDataAfterOACK(want []byte, blk int, b uint16) {
	r.t.Helper()
	p := r.next()
	for p.Op == opOACK {
		p = r.next()
	}
	r.checkData(p, want, blk, b)
}

// checkData checks that p is DATA block b of want at block size blk.
func (r *rawClient) checkData(p tftptest.Packet, want []byte, blk int, b uint16) {
	r.t.Helper()
	if p.Op != opDATA || p.Block != b {
		r.t.Fatalf("got op %d block %d, want DATA %d", p.Op, p.Block, b)
	}
	off := (int(b) - 1) * blk
	if !bytes.Equal(p.Data, want[off:min(off+blk, len(want))]) {
		r.t.Fatalf("block %d: content differs", b)
	}
}

// silent checks that nothing arrives for d.
func (r *rawClient) silent(d time.Duration) {
	r.t.Helper()
	if p, err := tftptest.Read(r.c, d); err == nil {
		r.t.Fatalf("got op %d block %d, want silence", p.Op, p.Block)
	}
}

func oackOptions(t *testing.T, p tftptest.Packet) map[string]string {
	t.Helper()
	if p.Op != opOACK {
		t.Fatalf("got op %d, want OACK", p.Op)
	}
	opts := map[string]string{}
	fields := strings.Split(strings.TrimRight(string(p.Data), "\x00"), "\x00")
	for i := 0; i+1 < len(fields); i += 2 {
		opts[fields[i]] = fields[i+1]
	}
	return opts
}

// TestTFTPWindow walks a windowed transfer: the window is granted (and
// capped), each window is sent without waiting, and the next one starts
// after the ACK of the window's last block, up to the empty last block of
// a file that is an exact multiple of the block size.
func TestTFTPWindow(t *testing.T) {
	ts := startServer(t, nil)
	kernel := ts.root.kernel // 600 blocks of 512: block 601 is empty
	r := newRawClient(t, ts)
	defer r.close()
	r.rrq("master/vmlinuz", "blksize", "512", "windowsize", "8", "tsize", "0")
	opts := oackOptions(t, r.next())
	if opts["windowsize"] != "8" || opts["blksize"] != "512" || opts["tsize"] != strconv.Itoa(len(kernel)) {
		t.Fatalf("OACK %v", opts)
	}
	r.ack(0)
	for first := uint16(1); first <= 601; first += 8 {
		last := min(first+7, 601)
		r.expectData(kernel, 512, first, last)
		r.ack(last)
	}
	r.silent(100 * time.Millisecond)
	waitFor(t, "transfer end", 10*time.Second, func() bool { return ts.Active() == 0 })
	t.Logf("windows sent with UDP GSO: %v", gsoInUse(ts.Server))

	// A window larger than the cap gets the cap.
	r2 := newRawClient(t, ts)
	defer r2.close()
	r2.rrq("pxelinux.0", "windowsize", "1000")
	if opts := oackOptions(t, r2.next()); opts["windowsize"] != strconv.Itoa(testConfig.MaxWindowSize) {
		t.Fatalf("OACK %v, want windowsize %d", opts, testConfig.MaxWindowSize)
	}
}

// TestTFTPMidWindowAck: a receiver that saw a gap acknowledges the last
// block it has in order; the sender goes on from the block after it with a
// whole window (RFC 7440 section 4).
func TestTFTPMidWindowAck(t *testing.T) {
	ts := startServer(t, nil)
	kernel := ts.root.kernel
	r := newRawClient(t, ts)
	defer r.close()
	r.rrq("master/vmlinuz", "blksize", "512", "windowsize", "8")
	oackOptions(t, r.next())
	r.ack(0)
	r.expectData(kernel, 512, 1, 8)
	r.ack(3)
	r.expectData(kernel, 512, 4, 11)
	// A stale ACK (older than the window) and one for a block never sent
	// change nothing.
	r.ack(2)
	r.ack(500)
	r.silent(150 * time.Millisecond)
	r.ack(11)
	r.expectData(kernel, 512, 12, 19)
}

// TestTFTPDuplicateAck: in a window, a repeated ACK of the block before
// the window means its first block was lost: the window is sent again,
// once. In lock-step a duplicate ACK is ignored (RFC 1350's Sorcerer's
// Apprentice bug would double every packet from then on).
func TestTFTPDuplicateAck(t *testing.T) {
	ts := startServer(t, func(c *testOptions) { c.Timeout = 2 * time.Second })
	kernel := ts.root.kernel
	t.Run("window", func(t *testing.T) {
		r := newRawClient(t, ts)
		defer r.close()
		r.rrq("master/vmlinuz", "blksize", "512", "windowsize", "4")
		oackOptions(t, r.next())
		r.ack(0)
		r.expectData(kernel, 512, 1, 4)
		r.ack(4)
		r.expectData(kernel, 512, 5, 8)
		r.ack(4) // block 5 lost
		r.expectData(kernel, 512, 5, 8)
		r.ack(4) // again: no second resend before the timeout
		r.silent(300 * time.Millisecond)
		r.ack(8)
		r.expectData(kernel, 512, 9, 12)
	})
	t.Run("lock-step", func(t *testing.T) {
		r := newRawClient(t, ts)
		defer r.close()
		r.rrq("master/vmlinuz")
		r.expectData(kernel, 512, 1, 1)
		r.ack(1)
		r.expectData(kernel, 512, 2, 2)
		r.ack(1)
		r.silent(300 * time.Millisecond)
		r.ack(2)
		r.expectData(kernel, 512, 3, 3)
	})
}

// TestTFTPRetransmitAndGiveUp: without ACKs the OACK, and then the window,
// is sent again Retries times, after Timeout and then twice the last wait,
// then the client gets an ERROR and the transfer is gone. The two are separate transfers: an ACK
// of the last OACK sent would race the server's giving up on it.
func TestTFTPRetransmitAndGiveUp(t *testing.T) {
	const timeout, retries = 150 * time.Millisecond, 2
	ts := startServer(t, func(c *testOptions) {
		c.Timeout = timeout
		c.Retries = retries
	})
	timedOut := func(r *rawClient, start time.Time) {
		t.Helper()
		p := r.next()
		if p.Op != opERROR || !strings.Contains(p.Msg, "timeout") {
			t.Fatalf("got op %d %q, want ERROR timeout", p.Op, p.Msg)
		}
		// Each wait doubles: 150 + 300 + 600 ms before it gives up.
		if took, want := time.Since(start), patience(timeout, retries); took < want {
			t.Fatalf("gave up after %v, before waits of %v doubling to %v", took, timeout, want)
		}
	}

	// The OACK, never acknowledged.
	r := newRawClient(t, ts)
	defer r.close()
	start := time.Now()
	r.rrq("master/vmlinuz", "blksize", "512", "windowsize", "2")
	for range retries + 1 {
		oackOptions(t, r.next()) // the OACK, then its retransmissions
	}
	timedOut(r, start)

	// The window, never acknowledged. The OACK is acknowledged at once; an
	// ACK that a busy machine sends late meets a retransmitted OACK, which
	// is skipped.
	r2 := newRawClient(t, ts)
	defer r2.close()
	start = time.Now()
	r2.rrq("master/vmlinuz", "blksize", "512", "windowsize", "2")
	oackOptions(t, r2.next())
	r2.ack(0)
	p := r2.next()
	for p.Op == opOACK {
		p = r2.next()
	}
	if p.Op != opDATA || p.Block != 1 || !bytes.Equal(p.Data, ts.root.kernel[:512]) {
		t.Fatalf("got op %d block %d, want DATA 1", p.Op, p.Block)
	}
	r2.expectData(ts.root.kernel, 512, 2, 2)
	for range retries {
		r2.expectData(ts.root.kernel, 512, 1, 2)
	}
	timedOut(r2, start)

	waitFor(t, "transfer end", 10*time.Second, func() bool { return ts.Active() == 0 })
	if !strings.Contains(ts.logs.String(), "transfer failed") {
		t.Errorf("no log line for the failed transfer")
	}
}

// TestTFTPClientPauses: a lock-step client that stops answering (GRUB
// does not send a lost ACK again; a busy firmware or VM goes quiet) gets
// its block again after waits that double, and the transfer goes on when
// it answers after more than Retries x Timeout.
func TestTFTPClientPauses(t *testing.T) {
	const timeout, retries = 200 * time.Millisecond, 3
	ts := startServer(t, func(c *testOptions) {
		c.Timeout = timeout
		c.Retries = retries
	})
	r := newRawClient(t, ts)
	defer r.close()
	start := time.Now()
	r.rrq("master/vmlinuz", "blksize", "512")
	oackOptions(t, r.next())
	r.ack(0)
	for range retries + 1 { // block 1, then resent after waits of 200, 400 and 800 ms
		r.expectDataAfterOACK(ts.root.kernel, 512, 1)
	}
	if took, least := time.Since(start), timeout+2*timeout+4*timeout; took < least {
		t.Fatalf("third resend after %v, want waits that double (%v at least)", took, least)
	}
	r.ack(1) // within the last wait (1.6 s), past Retries x Timeout
	r.expectData(ts.root.kernel, 512, 2, 2)
	r.ack(2)
	r.expectData(ts.root.kernel, 512, 3, 3)
}

// TestTFTPRetransmittedRequest: a client that sends its RRQ again before
// the answer arrives gets one transfer, not two.
func TestTFTPRetransmittedRequest(t *testing.T) {
	ts := startServer(t, nil)
	r := newRawClient(t, ts)
	defer r.close()
	r.rrq("pxelinux.0")
	r.rrq("pxelinux.0")
	r.expectData(ts.root.nbp, 512, 1, 1)
	r.silent(100 * time.Millisecond)
	if n := ts.Active(); n != 1 {
		t.Fatalf("%d transfers for one client", n)
	}
}

// TestTFTPTransferLimit: beyond MaxTransfers, requests wait for a slot
// and every client still gets its file.
func TestTFTPTransferLimit(t *testing.T) {
	ts := startServer(t, func(c *testOptions) { c.MaxTransfers = 2 })
	const clients = 8
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			got, _, err := tftptest.Get(ts.tftpAddr(), "master/initrd.gz", 512)
			if err == nil && !bytes.Equal(got, ts.root.initrd) {
				err = fmt.Errorf("client %d: content differs", i)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestTFTPUncachedFile serves a file too big for the cache block by
// block from the file.
func TestTFTPUncachedFile(t *testing.T) {
	ts := startServerHook(t, nil, func(s *Server) { s.cache = newFileCache(1024, 4096) })
	got, _, err := windowGet(ts.tftpAddr(), nil, "master/vmlinuz", 1468, 8)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ts.root.kernel) {
		t.Fatal("content differs")
	}
}

func TestFileCache(t *testing.T) {
	root := newTestFiles(t)
	c := newFileCache(200<<10, 400<<10)
	get := func(name string) ([]byte, bool) {
		t.Helper()
		f, err := os.Open(root.dir + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := f.Stat()
		b, ok, err := c.get(f, fi)
		if err != nil {
			t.Fatal(err)
		}
		return b, ok
	}
	if b, ok := get("pxelinux.0"); !ok || !bytes.Equal(b, root.nbp) {
		t.Fatal("nbp not cached or wrong")
	}
	if _, ok := get("master/vmlinuz"); ok {
		t.Fatal("a file over maxFile was cached")
	}
	a, _ := get("pxelinux.0")
	b, _ := get("pxelinux.0")
	if &a[0] != &b[0] {
		t.Fatal("second get read the file again")
	}
	// Rewriting the file makes a new entry.
	newNBP := bytes.Repeat([]byte("x"), 1000)
	if err := writeFileAt(root.dir+"/pxelinux.0", newNBP); err != nil {
		t.Fatal(err)
	}
	if b, _ := get("pxelinux.0"); !bytes.Equal(b, newNBP) {
		t.Fatal("stale content after the file changed")
	}
	// Over maxTotal, the least recently used entry goes.
	get("master/initrd.gz")
	if c.total > c.maxTotal {
		t.Fatalf("cache holds %d bytes, cap %d", c.total, c.maxTotal)
	}
}

func writeFileAt(path string, b []byte) error {
	// Sleep past the file system's timestamp granularity so the
	// modification time changes too.
	time.Sleep(20 * time.Millisecond)
	return os.WriteFile(path, b, 0o644)
}

// windowGet is an RFC 7440 receiver: it ACKs each window's last block,
// and on a gap ACKs the last block it has in order, once, as the RFC
// describes. via, if set, is the address to send the request to (a lossy
// proxy); the transfer then continues with whoever answers.
func windowGet(addr string, via *net.UDPAddr, name string, blksize, window int) (data []byte, timeouts int, err error) {
	srv, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, 0, err
	}
	if via != nil {
		srv = via
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	last := tftptest.RRQ(name, "blksize", strconv.Itoa(blksize), "windowsize", strconv.Itoa(window))
	to := srv
	if _, err := c.WriteToUDP(last, to); err != nil {
		return nil, 0, err
	}
	blk, win := 512, 1
	var peer *net.UDPAddr
	expect := uint16(1)
	inWindow := 0
	gapAcked := false
	started := false
	buf := make([]byte, 65536)
	deadline := time.Now().Add(30 * time.Second)
	sendAck := func(b uint16) {
		last = []byte{0, opACK, byte(b >> 8), byte(b)}
		c.WriteToUDP(last, peer)
	}
	// The receiver's timeout runs from the last block that made progress,
	// not from the last packet: a stream of duplicates must not keep it
	// from asking again (RFC 7440: on timeout, ACK the last block in order).
	progress := time.Now()
	for time.Now().Before(deadline) {
		c.SetReadDeadline(progress.Add(300 * time.Millisecond))
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				timeouts++
				if timeouts > 200 {
					return data, timeouts, errors.New("too many timeouts")
				}
				if peer == nil {
					c.WriteToUDP(last, to)
				} else {
					c.WriteToUDP(last, peer)
				}
				progress = time.Now()
				continue
			}
			return data, timeouts, err
		}
		if peer == nil {
			peer = from
		} else if from.Port != peer.Port {
			continue
		}
		p := buf[:n]
		switch binary.BigEndian.Uint16(p) {
		case opOACK:
			if started {
				continue
			}
			started = true
			progress = time.Now()
			fields := strings.Split(strings.TrimRight(string(p[2:]), "\x00"), "\x00")
			for i := 0; i+1 < len(fields); i += 2 {
				v, _ := strconv.Atoi(fields[i+1])
				switch fields[i] {
				case "blksize":
					blk = v
				case "windowsize":
					win = v
				}
			}
			sendAck(0)
		case opDATA:
			started = true
			b := binary.BigEndian.Uint16(p[2:])
			if b != expect {
				if !gapAcked {
					sendAck(expect - 1)
					gapAcked = true
					inWindow = 0
				}
				continue
			}
			data = append(data, p[4:]...)
			progress = time.Now()
			expect++
			inWindow++
			gapAcked = false
			end := len(p)-4 < blk
			if end || inWindow >= win {
				sendAck(b)
				inWindow = 0
			}
			if end {
				return data, timeouts, nil
			}
		case opERROR:
			return data, timeouts, fmt.Errorf("server error: %q", p[4:])
		}
	}
	return data, timeouts, errors.New("transfer did not finish in 30s")
}

// lossyProxy relays UDP between clients and a TFTP server, dropping and
// reordering packets in both directions: the network of a lab under a
// boot storm, in miniature. Each client gets a socket of its own towards
// the server; the server's transfer port is learned from its answers.
type lossyProxy struct {
	t      *testing.T
	front  *net.UDPConn
	server *net.UDPAddr
	loss   float64 // probability of dropping a packet
	hold   float64 // probability of holding a packet back behind the next one

	mu      sync.Mutex
	rng     *rand.Rand
	clients map[string]*proxyLeg
	dropped int
	wg      sync.WaitGroup
}

type proxyLeg struct {
	back   *net.UDPConn
	client *net.UDPAddr
	peer   *net.UDPAddr // the server's transfer socket, once known
	held   []byte       // a packet held back, towards the client
}

func startLossyProxy(t *testing.T, server string, loss, hold float64, seed uint64) *lossyProxy {
	t.Helper()
	srv, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{t: t, front: dialRaw(t), server: srv, loss: loss, hold: hold,
		rng: rand.New(rand.NewPCG(seed, seed+1)), clients: map[string]*proxyLeg{}}
	p.wg.Go(p.fromClients)
	t.Cleanup(func() {
		p.front.Close()
		p.mu.Lock()
		for _, l := range p.clients {
			l.back.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *lossyProxy) addr() *net.UDPAddr { return p.front.LocalAddr().(*net.UDPAddr) }

func (p *lossyProxy) drop() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rng.Float64() < p.loss {
		p.dropped++
		return true
	}
	return false
}

func (p *lossyProxy) fromClients() {
	buf := make([]byte, 65536)
	for {
		n, from, err := p.front.ReadFromUDP(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		leg := p.clients[from.String()]
		if leg == nil {
			back, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				p.mu.Unlock()
				p.t.Error(err)
				return
			}
			leg = &proxyLeg{back: back, client: from}
			p.clients[from.String()] = leg
			p.wg.Go(func() { p.fromServer(leg) })
		}
		to := leg.peer
		if to == nil {
			to = p.server
		}
		p.mu.Unlock()
		if p.drop() {
			continue
		}
		leg.back.WriteToUDP(buf[:n], to)
	}
}

func (p *lossyProxy) fromServer(leg *proxyLeg) {
	buf := make([]byte, 65536)
	for {
		n, from, err := leg.back.ReadFromUDP(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		leg.peer = from
		holdIt := p.rng.Float64() < p.hold
		p.mu.Unlock()
		if p.drop() {
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		if holdIt && leg.held == nil {
			leg.held = pkt // delivered after the next packet: reordered
			continue
		}
		p.front.WriteToUDP(pkt, leg.client)
		if leg.held != nil {
			p.front.WriteToUDP(leg.held, leg.client)
			leg.held = nil
		}
	}
}

// TestTFTPLossyNetwork fetches files through a proxy that drops 10% of
// the packets each way and reorders some, with RFC 7440 windows and in
// lock-step (pin/tftp's client): every byte must arrive.
func TestTFTPLossyNetwork(t *testing.T) {
	ts := startServer(t, func(c *testOptions) { c.Timeout = 100 * time.Millisecond; c.Retries = 20 })
	proxy := startLossyProxy(t, ts.tftpAddr(), 0.10, 0.05, 7)
	for _, tc := range []struct {
		blk, win int
	}{{512, 8}, {1468, 16}, {1468, 4}} {
		t.Run(fmt.Sprintf("blksize %d window %d", tc.blk, tc.win), func(t *testing.T) {
			got, timeouts, err := windowGet(ts.tftpAddr(), proxy.addr(), "master/vmlinuz", tc.blk, tc.win)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, ts.root.kernel) {
				t.Fatalf("got %d bytes, want %d (content differs)", len(got), len(ts.root.kernel))
			}
			t.Logf("client timeouts %d", timeouts)
		})
	}
	t.Run("lock-step", func(t *testing.T) {
		got, _, err := tftpGetVia(proxy.addr().String(), "master/initrd.gz", 1468)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, ts.root.initrd) {
			t.Fatal("content differs")
		}
	})
	proxy.mu.Lock()
	dropped := proxy.dropped
	proxy.mu.Unlock()
	if dropped < 20 {
		t.Fatalf("the proxy dropped only %d packets: the test did not test loss", dropped)
	}
	t.Logf("proxy dropped %d packets; server retransmitted %d windows", dropped, ts.retransmits.Load())
}

// tftpGetVia is tftpGet with a short timeout and many retries, for lossy
// paths.
func tftpGetVia(addr, name string, blksize int) ([]byte, int64, error) {
	return tftptest.GetOpts(addr, name, blksize, 100*time.Millisecond, 30)
}

func FuzzParseRequest(f *testing.F) {
	f.Add(tftptest.RRQ("pxelinux.0"))
	f.Add(tftptest.RRQ("pxelinux.cfg/01-52-54-00-00-00-01", "blksize", "1468", "tsize", "0", "windowsize", "16"))
	f.Add([]byte("\x00\x02upload\x00octet\x00"))
	f.Add([]byte("\x00\x01a\x00octet\x00blksize\x00"))
	f.Add([]byte("\x00\x01a\x00netascii\x00BLKSIZE\x0099999999999999999999\x00windowsize\x00-1\x00"))
	f.Add([]byte("\x00\x01"))
	f.Add([]byte{0, 4, 0, 1})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := parseRequest(p)
		if err != nil {
			return
		}
		if r.op != opRRQ && r.op != opWRQ {
			t.Fatalf("op %d accepted", r.op)
		}
		if r.filename == "" || r.mode == "" || strings.ContainsRune(r.filename, 0) {
			t.Fatalf("bad name or mode accepted: %q %q", r.filename, r.mode)
		}
		if r.blksize != 0 && (r.blksize < minBlockSize || r.blksize > maxBlockSize) {
			t.Fatalf("blksize %d out of range", r.blksize)
		}
		if r.windowsize < 0 || r.windowsize > maxWindowSize {
			t.Fatalf("windowsize %d out of range", r.windowsize)
		}
		if !bytes.HasPrefix(p[2:], []byte(r.filename+"\x00")) {
			t.Fatalf("file name %q is not the packet's first field", r.filename)
		}
	})
}

func TestParseRequest(t *testing.T) {
	tests := map[string]struct {
		pkt  []byte
		want request
		err  bool
	}{
		"plain":          {pkt: tftptest.RRQ("pxelinux.0"), want: request{op: opRRQ, filename: "pxelinux.0", mode: "octet"}},
		"options":        {pkt: tftptest.RRQ("a", "BlkSize", "1468", "TSIZE", "0", "windowsize", "8"), want: request{op: opRRQ, filename: "a", mode: "octet", blksize: 1468, tsize: true, windowsize: 8}},
		"mode case":      {pkt: []byte("\x00\x01a\x00OCTET\x00"), want: request{op: opRRQ, filename: "a", mode: "octet"}},
		"first counts":   {pkt: tftptest.RRQ("a", "blksize", "1024", "blksize", "512"), want: request{op: opRRQ, filename: "a", mode: "octet", blksize: 1024}},
		"bad values":     {pkt: tftptest.RRQ("a", "blksize", "7", "windowsize", "0", "tsize", "x"), want: request{op: opRRQ, filename: "a", mode: "octet"}},
		"huge blksize":   {pkt: tftptest.RRQ("a", "blksize", "65465"), want: request{op: opRRQ, filename: "a", mode: "octet"}},
		"unknown option": {pkt: tftptest.RRQ("a", "timeout", "3"), want: request{op: opRRQ, filename: "a", mode: "octet"}},
		"dangling name":  {pkt: []byte("\x00\x01a\x00octet\x00blksize\x00"), want: request{op: opRRQ, filename: "a", mode: "octet"}},
		"write":          {pkt: tftptest.RRQ("a")[0:0], err: true},
		"wrq":            {pkt: []byte("\x00\x02up\x00octet\x00"), want: request{op: opWRQ, filename: "up", mode: "octet"}},
		"no mode":        {pkt: []byte("\x00\x01a\x00"), err: true},
		"empty name":     {pkt: []byte("\x00\x01\x00octet\x00"), err: true},
		"ack":            {pkt: []byte{0, 4, 0, 1}, err: true},
		"short":          {pkt: []byte{0}, err: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseRequest(tt.pkt)
			if (err != nil) != tt.err {
				t.Fatalf("err %v, want error %v", err, tt.err)
			}
			if !tt.err && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestTFTPWildcardListen: a server listening on all addresses answers
// from the address the client asked (IP_PKTINFO / IPV6_PKTINFO), also on a
// dual-stack socket.
func TestTFTPWildcardListen(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0"} {
		t.Run(listen, func(t *testing.T) {
			ts := startServer(t, func(c *testOptions) { c.addr = listen })
			_, port, _ := net.SplitHostPort(ts.tftpAddr())
			r := &rawClient{t: t, c: dialRaw(t), srv: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: mustAtoi(t, port)}}
			defer r.close()
			r.rrq("pxelinux.0")
			p := r.next()
			if p.Op != opDATA || !p.From.IP.Equal(net.IPv4(127, 0, 0, 1)) {
				t.Fatalf("op %d from %v, want DATA from 127.0.0.1", p.Op, p.From)
			}
			got, _, err := tftptest.Get("127.0.0.1:"+port, "pxelinux.0", 1468)
			if err != nil || !bytes.Equal(got, ts.root.nbp) {
				t.Fatalf("fetch: %v", err)
			}
		})
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTFTPBadRequestsAnswered: requests the server cannot take are
// answered with an ERROR packet, not dropped, so the client learns why
// instead of waiting for its timeouts: an empty file name, a missing
// mode, a transfer mode other than octet (netascii included: it is
// refused, not served as octet) and a name longer than an Ethernet frame
// (read whole and refused by the handler, not cut short and dropped).
func TestTFTPBadRequestsAnswered(t *testing.T) {
	long := strings.Repeat("a/", 1100) + "pxelinux.0" // 2,210 bytes
	tests := map[string]struct {
		pkt  []byte
		code uint16
		msg  string
	}{
		"empty name":   {pkt: []byte("\x00\x01\x00octet\x00"), code: errCodeNotFound, msg: "invalid file name: empty"},
		"empty mode":   {pkt: []byte("\x00\x01pxelinux.0\x00\x00"), code: errCodeIllegalOp, msg: "malformed request: empty transfer mode"},
		"no mode":      {pkt: []byte("\x00\x01pxelinux.0\x00"), code: errCodeIllegalOp, msg: "malformed request: no file name and mode"},
		"netascii":     {pkt: []byte("\x00\x01pxelinux.0\x00netascii\x00"), code: errCodeIllegalOp, msg: "netascii mode not supported: octet only"},
		"NetASCII":     {pkt: []byte("\x00\x01pxelinux.0\x00NetASCII\x00"), code: errCodeIllegalOp, msg: "netascii mode not supported: octet only"},
		"mail":         {pkt: []byte("\x00\x01pxelinux.0\x00mail\x00"), code: errCodeIllegalOp, msg: `unknown transfer mode "mail": octet only`},
		"unknown mode": {pkt: []byte("\x00\x01pxelinux.0\x00binary\x00"), code: errCodeIllegalOp, msg: `unknown transfer mode "binary": octet only`},
		"long name":    {pkt: tftptest.RRQ(long), code: errCodeNotFound, msg: "file not found"},
	}
	ts := startServer(t, nil)
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			r := newRawClient(t, ts)
			defer r.close()
			if _, err := r.c.WriteToUDP(tt.pkt, r.srv); err != nil {
				t.Fatal(err)
			}
			p := r.next()
			if p.Op != opERROR || p.Code != tt.code || p.Msg != tt.msg {
				t.Fatalf("got op %d code %d %q, want ERROR %d %q", p.Op, p.Code, p.Msg, tt.code, tt.msg)
			}
			r.silent(50 * time.Millisecond)
		})
	}
	waitFor(t, "no transfers", 10*time.Second, func() bool { return ts.Active() == 0 })
	// The long name is logged cut short (the handler's error is its own).
	if logs := ts.logs.String(); strings.Contains(logs, "file="+long) || !strings.Contains(logs, `... (2210 bytes)"`) {
		t.Errorf("the long name is not logged cut short:\n%.2000s", logs)
	}
	// The server still serves.
	got, _, err := tftptest.Get(ts.tftpAddr(), "pxelinux.0", 1468)
	if err != nil || !bytes.Equal(got, ts.root.nbp) {
		t.Fatalf("fetch after the refusals: %v", err)
	}
}

// TestTFTPSizeQuery: a client that reads tsize from the OACK and ends the
// transfer with error 8 (what UEFI PXE firmware does before it fetches a
// file) made a size query, not a failed transfer; an error 8 after data has
// flowed, or another error code, is a failure.
func TestTFTPSizeQuery(t *testing.T) {
	ts := startServer(t, nil)
	abort := func(r *rawClient, code uint16) {
		r.t.Helper()
		if _, err := r.c.WriteToUDP(appendError(nil, code, "User aborted the transfer"), r.peer); err != nil {
			r.t.Fatal(err)
		}
	}
	r := newRawClient(t, ts)
	defer r.close()
	r.rrq("master/vmlinuz", "tsize", "0", "blksize", "1468")
	if opts := oackOptions(t, r.next()); opts["tsize"] != strconv.Itoa(len(ts.root.kernel)) {
		t.Fatalf("OACK %v", opts)
	}
	abort(r, errCodeOptionRefused)
	waitFor(t, "transfer end", 5*time.Second, func() bool { return ts.Active() == 0 })
	if st := ts.Stats(); st.Failed != 0 || st.Done != 0 {
		t.Errorf("after a size query: %+v, want neither done nor failed", st)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "size query answered") || strings.Contains(logs, "transfer failed") {
		t.Errorf("size query logged as:\n%s", logs)
	}

	// Error 8 after the first data block: a failure.
	r2 := newRawClient(t, ts)
	defer r2.close()
	r2.rrq("master/vmlinuz", "tsize", "0", "blksize", "512")
	oackOptions(t, r2.next())
	r2.ack(0)
	r2.expectData(ts.root.kernel, 512, 1, 1)
	r2.ack(1)
	r2.next()
	abort(r2, errCodeOptionRefused)
	waitFor(t, "second transfer end", 5*time.Second, func() bool { return ts.Active() == 0 })
	// Another code before any data: a failure too.
	r3 := newRawClient(t, ts)
	defer r3.close()
	r3.rrq("master/vmlinuz", "tsize", "0")
	oackOptions(t, r3.next())
	abort(r3, errCodeUndefined)
	waitFor(t, "third transfer end", 5*time.Second, func() bool { return ts.Active() == 0 })
	if st := ts.Stats(); st.Failed != 2 {
		t.Errorf("failed = %d, want 2 (error 8 after data, error 0 before)", st.Failed)
	}
}

// TestConfigRanges: NewServer refuses limits out of range, naming them;
// a timeout over a minute is refused (its waits double up to 32 times it).
func TestConfigRanges(t *testing.T) {
	read := func(string, netip.AddrPort) (Content, error) { return Content{}, ErrNotFound }
	for _, tt := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Timeout = 0 }, "tftp timeout 0s"},
		{func(c *Config) { c.Timeout = 61 * time.Second }, "tftp timeout 1m1s"},
		{func(c *Config) { c.Retries = -1 }, "retries -1"},
		{func(c *Config) { c.MaxBlockSize = 100 }, "tftp block size 100"},
		{func(c *Config) { c.MaxWindowSize = 0 }, "tftp window size 0"},
		{func(c *Config) { c.MaxTransfers = 0 }, "tftp max transfers 0"},
	} {
		cfg := testConfig
		tt.mod(&cfg)
		if _, err := NewServer(read, cfg, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewServer(%+v) = %v, want an error with %q", cfg, err, tt.want)
		}
	}
	cfg := testConfig
	cfg.Timeout = time.Minute
	if _, err := NewServer(read, cfg, nil); err != nil {
		t.Errorf("a timeout of 1m: %v", err)
	}
}

//go:build !tftp_portable

package tftp

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl/netboot/tftp/tftptest"
)

// TestTFTPStormSharedSockets runs many transfers at once, lock-step and
// windowed, at two block sizes: every byte must arrive, every transfer
// must be counted done, and the transfers must share their workers'
// sockets (a port per worker, not per transfer), whose batches carry
// many clients' packets.
func TestTFTPStormSharedSockets(t *testing.T) {
	ts := startServer(t, nil)
	const clients = 96
	type result struct {
		port int
		err  error
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			name, want := "pxelinux.0", ts.root.nbp
			if i%3 == 0 {
				name, want = "master/vmlinuz", ts.root.kernel
			}
			blk := []int{512, 1468}[i%2]
			win := []int{0, 8}[(i/2)%2]
			port, got, err := fetchRecordingPort(ts.tftpAddr(), name, blk, win)
			if err == nil && !bytes.Equal(got, want) {
				err = fmt.Errorf("%s: got %d bytes, want %d (content differs)", name, len(got), len(want))
			}
			results[i] = result{port, err}
		})
	}
	wg.Wait()
	ports := map[int]bool{}
	for i, r := range results {
		if r.err != nil {
			t.Errorf("client %d: %v", i, r.err)
		}
		ports[r.port] = true
	}
	waitFor(t, "every transfer counted", 5*time.Second, func() bool { return ts.Stats().Done == clients })
	if st := ts.Stats(); st.Failed != 0 || st.Active != 0 {
		t.Fatalf("stats %+v: want no failed and none active", st)
	}
	t.Logf("%d transfers from %d ports; server retransmitted %d windows", clients, len(ports), ts.Stats().Retransmits)
	if len(ports) > len(ts.loop.workers) {
		t.Fatalf("transfers answered from %d ports, want at most one per worker (%d)", len(ports), len(ts.loop.workers))
	}
}

// fetchRecordingPort reads name with a window of win (0: lock-step, no
// windowsize asked) and reports the port the transfer came from.
func fetchRecordingPort(addr, name string, blk, win int) (port int, data []byte, err error) {
	srv, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return 0, nil, err
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	opts := []string{"blksize", fmt.Sprint(blk)}
	if win > 0 {
		opts = append(opts, "windowsize", fmt.Sprint(win))
	}
	if _, err := c.WriteToUDP(tftptest.RRQ(name, opts...), srv); err != nil {
		return 0, nil, err
	}
	var peer *net.UDPAddr
	next := uint16(1)
	for {
		p, err := tftptest.Read(c, 5*time.Second)
		if err != nil {
			return 0, nil, fmt.Errorf("after %d bytes: %w", len(data), err)
		}
		if peer == nil {
			peer = p.From
		} else if p.From.Port != peer.Port {
			return 0, nil, fmt.Errorf("packet from port %d, transfer is on %d", p.From.Port, peer.Port)
		}
		var ack uint16
		switch {
		case p.Op == opOACK:
			ack = 0
		case p.Op == opDATA && p.Block == next:
			data = append(data, p.Data...)
			next++
			if len(p.Data) < blk {
				c.WriteToUDP([]byte{0, opACK, byte(p.Block >> 8), byte(p.Block)}, peer)
				return peer.Port, data, nil
			}
			if win > 0 && (p.Block%uint16(win)) != 0 {
				continue // ACK the window's last block only
			}
			ack = p.Block
		case p.Op == opDATA && win > 0 && p.Block > next:
			continue // a gap: the window's ACK or the timeout recovers it
		case p.Op == opDATA:
			ack = next - 1 // a block again (our ACK was lost): say where we are
		default:
			return 0, nil, fmt.Errorf("got op %d", p.Op)
		}
		if _, err := c.WriteToUDP([]byte{0, opACK, byte(ack >> 8), byte(ack)}, peer); err != nil {
			return 0, nil, err
		}
	}
}

// TestTFTPStrangerOnSharedSocket: a transfer's socket serves other
// clients too, so packets from anyone but the transfer's own client (its
// address and port) must neither move nor end the transfer, and get no
// answer.
func TestTFTPStrangerOnSharedSocket(t *testing.T) {
	ts := startServer(t, func(c *testOptions) { c.Timeout = 2 * time.Second })
	kernel := ts.root.kernel
	r := newRawClient(t, ts)
	defer r.close()
	r.rrq("master/vmlinuz")
	r.expectData(kernel, 512, 1, 1)

	stranger := dialRaw(t)
	for _, p := range [][]byte{{0, opACK, 0, 1}, {0, opACK, 0, 9}, appendError(nil, errCodeUndefined, "go away"), {0, opDATA, 0, 1, 'x'}} {
		if _, err := stranger.WriteToUDP(p, r.peer); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := tftptest.Read(stranger, 300*time.Millisecond); err == nil {
		t.Fatalf("the stranger got op %d block %d, want nothing", p.Op, p.Block)
	}
	r.silent(100 * time.Millisecond) // nothing moved for the client either
	r.ack(1)
	r.expectData(kernel, 512, 2, 2)
	for b := uint16(2); b < uint16(len(kernel)/512)+1; b++ {
		r.ack(b)
		r.next()
	}
	r.ack(uint16(len(kernel)/512) + 1)
	waitFor(t, "the transfer done", 5*time.Second, func() bool { return ts.Stats().Done == 1 })
	if st := ts.Stats(); st.Failed != 0 {
		t.Fatalf("stats %+v: want none failed", st)
	}
}

// TestTFTPClientGone: a client whose port closes mid-transfer (a node
// power-cycled) answers the next block with an ICMP port unreachable; the
// worker reads it from its shared socket's error queue and ends that
// transfer at once, long before Retries timeouts would, while another
// transfer on the same socket goes on.
func TestTFTPClientGone(t *testing.T) {
	ts := startServer(t, func(c *testOptions) { c.Timeout = 100 * time.Millisecond; c.Retries = 100 })
	kernel := ts.root.kernel
	other := newRawClient(t, ts)
	defer other.close()
	other.rrq("master/vmlinuz")
	other.expectData(kernel, 512, 1, 1)

	gone := newRawClient(t, ts)
	gone.rrq("master/vmlinuz")
	gone.expectData(kernel, 512, 1, 1)
	gone.close() // the next retransmission meets a closed port

	// Retries × Timeout is 10s; the ICMP error ends it within a few timeouts.
	waitFor(t, "the gone client's transfer ended", 5*time.Second, func() bool { return ts.Stats().Failed == 1 })
	if !strings.Contains(ts.logs.String(), "client gone") {
		t.Fatalf("no \"client gone\" in the log:\n%s", ts.logs.String())
	}
	other.ack(1)
	for p := other.next(); p.Block != 2; p = other.next() {
		if p.Op != opDATA || p.Block != 1 {
			t.Fatalf("got op %d block %d, want DATA 2 (or 1 again)", p.Op, p.Block)
		}
	}
	if st := ts.Stats(); st.Active != 1 {
		t.Fatalf("stats %+v: want the other transfer still running", st)
	}
}

// TestTFTPLocalAddresses: a server listening on every address answers
// each client from the address it asked (a worker socket per local
// address), over IPv4 and IPv6, every byte checked.
func TestTFTPLocalAddresses(t *testing.T) {
	ts := startServer(t, func(c *testOptions) { c.addr = ":0" })
	_, port, _ := net.SplitHostPort(ts.tftpAddr())
	for _, host := range []string{"127.0.0.1", "127.0.0.2", "::1"} {
		t.Run(host, func(t *testing.T) {
			ip := net.ParseIP(host)
			network := "udp4"
			if ip.To4() == nil {
				network = "udp6"
			}
			c, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
			if err != nil {
				t.Skipf("no %s here: %v", host, err)
			}
			defer c.Close()
			r := &rawClient{t: t, c: c, srv: &net.UDPAddr{IP: ip, Port: mustAtoi(t, port)}}
			r.rrq("pxelinux.0")
			p := r.next()
			if p.Op != opDATA || !p.From.IP.Equal(ip) {
				t.Fatalf("op %d from %v, want DATA from %s", p.Op, p.From, host)
			}
			got, _, err := tftptest.Get(net.JoinHostPort(host, port), "pxelinux.0", 1468)
			if err != nil || !bytes.Equal(got, ts.root.nbp) {
				t.Fatalf("fetch from %s: %v", host, err)
			}
		})
	}
}

// TestTFTPClientStartsOver: a client that answered and then went silent
// (reset while the server still resends its block) asks for the file
// again from the same port, as GRUB does after a reset (it numbers its
// ports from the same base): the old transfer ends without an ERROR and
// the client's next request gets a transfer of its own. A copy of the
// first request that the client sent before it answered changes nothing,
// whenever the server reads it.
func TestTFTPClientStartsOver(t *testing.T) {
	ts := startServer(t, func(c *testOptions) { c.Timeout = 200 * time.Millisecond; c.Retries = 20 })
	kernel := ts.root.kernel
	r := newRawClient(t, ts)
	defer r.close()
	r.rrq("master/vmlinuz", "blksize", "512")
	oackOptions(t, r.next())
	r.ack(0)
	r.expectDataAfterOACK(kernel, 512, 1)
	r.expectDataAfterOACK(kernel, 512, 1) // resent: the client is silent

	r.rrq("master/vmlinuz", "blksize", "512") // reset, from the same port
	// Active drops once the client's place is free.
	waitFor(t, "the old transfer ended", 5*time.Second, func() bool { return ts.Active() == 0 })
	if !strings.Contains(ts.logs.String(), "client started over") {
		t.Fatalf("no \"client started over\" in the log:\n%s", ts.logs.String())
	}
	r.rrq("master/vmlinuz", "blksize", "512") // its retransmission
	old := r.peer
	r.peer = nil // the new transfer may answer from another loop's port
	p := r.next()
	for p.Op == opDATA && p.Block == 1 && p.From.Port == old.Port { // a resend that left before the end
		r.peer = nil
		p = r.next()
	}
	if p.Op != opOACK {
		t.Fatalf("got op %d %q, want a new transfer's OACK", p.Op, p.Msg)
	}
	r.ack(0)
	r.expectDataAfterOACK(kernel, 512, 1)
	r.ack(1)
	r.expectData(kernel, 512, 2, 2)

	// A copy of the request sent before the client answered, as a client
	// that timed out waiting for the OACK sends it: the server may read
	// it before or after the ACK, and the transfer goes on either way.
	ts2 := startServer(t, nil)
	r2 := newRawClient(t, ts2)
	defer r2.close()
	r2.rrq("master/vmlinuz", "blksize", "512")
	oackOptions(t, r2.next())
	r2.rrq("master/vmlinuz", "blksize", "512")
	r2.ack(0)
	kernel = ts2.root.kernel
	last := uint16(len(kernel)/512 + 1)
	for b := uint16(1); b <= last; b++ {
		r2.expectDataAfterOACK(kernel, 512, b)
		r2.ack(b)
	}
	waitFor(t, "the transfer done", 5*time.Second, func() bool { return ts2.Stats().Done == 1 })
	if st := ts2.Stats(); st.Failed != 0 {
		t.Fatalf("stats %+v: a copy of the first request ended the transfer", st)
	}
}

// TestTFTPClientChaos: clients that send requests, ACKs of any block and
// ERRORs in random order from the same ports, with pauses, and then go
// away: nothing panics or races, every transfer ends (an ICMP error or
// the last wait), and the server then serves a whole file to a
// well-behaved client, every byte checked.
func TestTFTPClientChaos(t *testing.T) {
	const timeout, retries = 20 * time.Millisecond, 2
	ts := startServer(t, func(c *testOptions) { c.Timeout = timeout; c.Retries = retries })
	files := []string{"pxelinux.0", "master/vmlinuz", "master/initrd.gz", "missing"}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			srv := ts.conn.LocalAddr().(*net.UDPAddr)
			peer := srv
			var last uint16
			for range 300 {
				var pkt []byte
				switch r := rng.IntN(10); {
				case r == 0:
					opts := []string{"blksize", strconv.Itoa(512 + rng.IntN(1000))}
					if rng.IntN(2) == 0 {
						opts = append(opts, "windowsize", strconv.Itoa(1+rng.IntN(8)))
					}
					pkt = tftptest.RRQ(files[rng.IntN(len(files))], opts...)
					peer = srv
				case r == 1:
					pkt = []byte{0, opERROR, 0, 0, 'x', 0}
				case r < 6:
					b := last
					if rng.IntN(4) == 0 {
						b = uint16(rng.IntN(70000))
					}
					pkt = []byte{0, opACK, byte(b >> 8), byte(b)}
				}
				if pkt != nil {
					if peer == srv && pkt[1] != opRRQ {
						continue // nothing to answer yet
					}
					c.WriteToUDP(pkt, peer)
				}
				// Read what came, for up to a few milliseconds (a pause
				// past Timeout now and then).
				wait := time.Duration(rng.IntN(3)) * time.Millisecond
				if rng.IntN(20) == 0 {
					wait = 2 * timeout
				}
				if p, err := tftptest.Read(c, wait+time.Millisecond); err == nil {
					if p.From.Port != srv.Port {
						peer = p.From
					}
					if p.Op == opDATA {
						last = p.Block
					}
				}
			}
		}()
	}
	wg.Wait()
	// Their ports are closed: each transfer ends on an ICMP error or,
	// at the latest, after its last wait (140 ms here).
	waitFor(t, "every chaotic transfer ended", 10*time.Second, func() bool { return ts.Active() == 0 })
	data, _, err := tftptest.Get(ts.tftpAddr(), "master/vmlinuz", 1468)
	if err != nil || !bytes.Equal(data, ts.root.kernel) {
		t.Fatalf("a whole file after the chaos: %d bytes, %v", len(data), err)
	}
	t.Logf("stats after the chaos: %+v; clients that started over: %d", ts.Stats(), strings.Count(ts.logs.String(), "client started over"))
}

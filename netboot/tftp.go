package netboot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// tftpEngine is labctl's TFTP server (RFC 1350 with the option extensions
// RFC 2347 blksize, RFC 2349 tsize and RFC 7440 windowsize). It reads
// requests from the boot server's listening socket, resolves names with
// Server.open (so TFTP and HTTP serve the same content: root files and
// generated pxelinux configs) and runs each transfer on a socket of its own
// in one of a few event loops (tftpWorker). Small boot files (NBP, kernel,
// initrd) are read once into memory and shared by every transfer
// (fileCache).
//
// pin/tftp served the boot root before this engine: it has no windowsize,
// its transfers cannot be cancelled, and a goroutine per transfer with a
// read deadline per block costs about 1.6x dnsmasq's CPU per byte (issue 6,
// perf-baselines.md). It remains the test client.
type tftpEngine struct {
	s         *Server
	maxBlock  int
	maxWindow int
	timeout   time.Duration
	retries   int
	cache     *fileCache
	workers   []*tftpWorker
	next      atomic.Uint32

	// slots holds one token per running transfer (MaxTransfers); requests
	// beyond it wait for a slot, up to maxWaiting of them.
	slots      chan struct{}
	waiting    atomic.Int64
	maxWaiting int64

	stop    chan struct{} // closed when Serve's context ends
	starts  sync.WaitGroup
	mu      sync.Mutex
	clients map[netip.AddrPort]struct{} // a transfer is starting, waiting or running for this client

	retransmits atomic.Int64
	// gso is true while windows go out with UDP segmentation offload
	// (one sendmsg per window); the first refusal turns it off.
	gso atomic.Bool
}

// Cache limits: files up to 64 MiB (NBPs, kernels, initrds) are kept in
// memory, 256 MiB in all; bigger files are read block by block.
const (
	tftpCacheMaxFile  = 64 << 20
	tftpCacheMaxTotal = 256 << 20
	tftpMaxWorkers    = 4
)

func newTFTPEngine(s *Server) *tftpEngine {
	cfg := s.cfg.TFTP
	e := &tftpEngine{
		s:          s,
		maxBlock:   cfg.MaxBlockSize,
		maxWindow:  cfg.MaxWindowSize,
		timeout:    cfg.Timeout,
		retries:    cfg.Retries,
		cache:      newFileCache(tftpCacheMaxFile, tftpCacheMaxTotal),
		slots:      make(chan struct{}, cfg.MaxTransfers),
		maxWaiting: 4 * int64(cfg.MaxTransfers),
		stop:       make(chan struct{}),
		clients:    map[netip.AddrPort]struct{}{},
	}
	e.gso.Store(true)
	return e
}

// serve answers requests on conn until ctx ends. Then it stops taking
// requests, ends every transfer in flight with an ERROR packet ("boot
// server shutting down", so no client waits for its timeout) and returns.
func (e *tftpEngine) serve(ctx context.Context, conn net.PacketConn) error {
	udp, ok := conn.(*net.UDPConn)
	if !ok {
		return fmt.Errorf("boot server: tftp: %T is not a UDP socket", conn)
	}
	// One event loop per two CPUs: 80-90% of a block's cost is the
	// kernel's UDP path (measured: issue 6), which runs on the CPU that
	// sends and on the receiving side; a second loop on a 2-CPU machine
	// cost 20% more CPU for the same throughput.
	n := min(max(runtime.GOMAXPROCS(0)/2, 1), tftpMaxWorkers)
	var loops sync.WaitGroup
	defer loops.Wait()
	for range n {
		w, err := newTFTPWorker(e)
		if err != nil {
			for _, w := range e.workers {
				w.stop(errShuttingDown.Error())
			}
			return fmt.Errorf("boot server: tftp: %w", err)
		}
		e.workers = append(e.workers, w)
		loops.Go(w.run)
	}
	local := udp.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	needDst := local.IsUnspecified()
	if needDst {
		if err := enablePktinfo(udp); err != nil {
			e.s.log.Warn("tftp: cannot learn request destinations; replies leave from the address the kernel picks", "err", err)
			needDst = false
		}
	}

	// A storm's requests arrive together: room for a few thousand of them
	// while the listener starts transfers (root may exceed rmem_max).
	growReceiveBuffer(udp, 4<<20)

	lerr := make(chan error, 1)
	go func() { lerr <- e.listen(udp, local, needDst) }()
	var err error
	select {
	case err = <-lerr:
		err = fmt.Errorf("boot server: tftp %s: %w", udp.LocalAddr(), err)
	case <-ctx.Done():
	}
	close(e.stop)
	udp.SetReadDeadline(time.Now()) // wakes the listener
	if err == nil {
		<-lerr
	}
	e.starts.Wait() // every transfer is in a worker or done
	for _, w := range e.workers {
		w.stop(errShuttingDown.Error())
	}
	return err
}

// listen reads requests until the engine stops.
func (e *tftpEngine) listen(conn *net.UDPConn, local netip.Addr, needDst bool) error {
	buf := make([]byte, 1500)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := conn.ReadMsgUDPAddrPort(buf, oob)
		select {
		case <-e.stop:
			return nil
		default:
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			e.s.log.Debug("tftp: read request", "err", err)
			continue
		}
		req, err := parseRequest(buf[:n])
		if err != nil {
			e.s.log.Debug("tftp: not a request", "client", from.Addr().Unmap().String(), "err", err)
			continue
		}
		dst := local
		if needDst {
			dst = pktinfoDst(oob[:oobn])
		}
		client := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		e.mu.Lock()
		_, busy := e.clients[client]
		if !busy {
			e.clients[client] = struct{}{}
		}
		e.mu.Unlock()
		if busy {
			continue // a retransmitted request: its transfer is under way
		}
		// The common case (a slot is free) starts the transfer right here:
		// its first packet leaves without waiting for another goroutine
		// or thread to wake up. Only a request that must wait for a slot
		// gets a goroutine of its own.
		e.starts.Add(1)
		select {
		case e.slots <- struct{}{}:
			e.start(req, client, dst, true)
		default:
			go e.start(req, client, dst, false)
		}
	}
}

// start runs one request up to the point where a worker owns it: wait for
// a transfer slot, resolve the name, open the transfer's socket, negotiate
// options.
func (e *tftpEngine) start(req request, client netip.AddrPort, dst netip.Addr, haveSlot bool) {
	defer e.starts.Done()
	release := func() {
		e.mu.Lock()
		delete(e.clients, client)
		e.mu.Unlock()
	}
	log := e.s.log.With("proto", "tftp", "client", client.Addr().String(), "file", req.filename)
	refuse := func(code uint16, msg string) {
		e.refuse(client, dst, code, msg)
		if haveSlot {
			<-e.slots
		}
		release()
	}
	if req.op == opWRQ {
		log.Warn("tftp write refused")
		refuse(errCodeAccess, errReadOnly.Error())
		return
	}
	if req.mode == "mail" {
		refuse(errCodeIllegalOp, "mail mode not supported")
		return
	}

	// Beyond MaxTransfers, requests wait for a slot instead of being
	// refused: the client sees a slow start, not a failed boot.
	if !haveSlot && !e.acquireSlot() {
		log.Warn("tftp: too many requests waiting for a transfer slot; dropped (the client will ask again)")
		release()
		return
	}
	e.s.activeTFTP.Add(1)
	t := &transfer{fd: -1, key: client, name: req.filename, start: time.Now()}
	fail := func(code uint16, msg string) {
		e.refuse(client, dst, code, msg)
		e.finishQuiet(t)
	}

	c, err := e.s.open(req.filename, client.Addr().AsSlice())
	if err != nil {
		// Misses are routine (pxelinux walks its config names until one
		// exists); a name that tries to leave the root is not.
		if errors.Is(err, errBadName) {
			log.Warn("transfer refused", "err", err)
			fail(errCodeNotFound, errBadName.Error())
		} else {
			log.Debug("transfer refused", "err", err)
			fail(errCodeNotFound, errNotFound.Error())
		}
		return
	}
	t.node, t.size = c.node, c.size
	if c.generated != nil {
		t.data = c.generated
	} else {
		// openFile's fstat is recent enough: the cache keys on inode,
		// size and mtime, and a file changed after this point is a race
		// a second fstat could not close either.
		var cached bool
		t.data, cached, err = e.cache.get(c.file, c.info)
		if err != nil {
			c.Close()
			log.Warn("transfer failed", "err", err)
			fail(errCodeUndefined, "read error")
			return
		}
		if cached {
			c.Close()
		} else {
			t.file = c.file
		}
	}

	t.blk, t.window = 512, 1
	var opts []string
	if req.blksize > 0 {
		t.blk = min(req.blksize, e.maxBlock)
		opts = append(opts, "blksize", strconv.Itoa(t.blk))
	}
	if req.tsize {
		opts = append(opts, "tsize", strconv.FormatInt(t.size, 10))
	}
	if req.windowsize > 0 {
		t.window = min(req.windowsize, e.maxWindow)
		opts = append(opts, "windowsize", strconv.Itoa(t.window))
	}
	if len(opts) > 0 {
		t.oack = appendOACK(nil, opts...)
	}
	t.nblocks = uint64(t.size/int64(t.blk)) + 1
	t.base = 1

	t.fd, err = transferSocket(dst, client)
	if err != nil {
		log.Warn("transfer failed", "err", err)
		e.finishQuiet(t)
		return
	}
	// The first packet leaves from here (in the listener, usually), so
	// the client can answer while the worker takes the transfer over.
	first := t.oack
	if first == nil {
		n := int(min(int64(t.blk), t.size))
		first = make([]byte, 4+n)
		first[1], first[3] = opDATA, 1
		if err := t.readBlock(first[4:], 0); err != nil {
			log.Warn("transfer failed", "err", err)
			unix.Write(t.fd, appendError(nil, errCodeUndefined, "read error"))
			e.finishQuiet(t)
			return
		}
		t.sent = 1
	}
	if _, err := unix.Write(t.fd, first); err != nil && !errors.Is(err, unix.EAGAIN) {
		e.finish(t, fmt.Errorf("send first packet: %w", err))
		return
	}
	w := e.workers[int(e.next.Add(1))%len(e.workers)]
	if !w.add(t) {
		unix.Write(t.fd, appendError(nil, errCodeUndefined, errShuttingDown.Error()))
		e.finish(t, errShuttingDown)
	}
}

// acquireSlot waits for a transfer slot. It returns false if too many
// requests wait already, or the engine stops.
func (e *tftpEngine) acquireSlot() bool {
	select {
	case e.slots <- struct{}{}:
		return true
	default:
	}
	if e.waiting.Add(1) > e.maxWaiting {
		e.waiting.Add(-1)
		return false
	}
	defer e.waiting.Add(-1)
	select {
	case e.slots <- struct{}{}:
		return true
	case <-e.stop:
		return false
	}
}

// refuse answers a request with an ERROR from a socket of its own, as the
// first packet of a transfer would come.
func (e *tftpEngine) refuse(client netip.AddrPort, dst netip.Addr, code uint16, msg string) {
	fd, err := transferSocket(dst, client)
	if err != nil {
		e.s.log.Debug("tftp: cannot send error", "client", client.String(), "err", err)
		return
	}
	unix.Write(fd, appendError(nil, code, msg))
	unix.Close(fd)
}

// finish releases everything a transfer holds and logs it (err nil: done).
func (e *tftpEngine) finish(t *transfer, err error) {
	logTransfer(e.s.log, t, err)
	e.finishQuiet(t)
}

func (e *tftpEngine) finishQuiet(t *transfer) {
	if t.fd >= 0 {
		unix.Close(t.fd)
		t.fd = -1
	}
	if t.file != nil {
		t.file.Close()
		t.file = nil
	}
	e.mu.Lock()
	delete(e.clients, t.key)
	e.mu.Unlock()
	e.s.activeTFTP.Add(-1)
	<-e.slots
}

// transferSocket opens a non-blocking UDP socket bound to local (any
// address if invalid or unspecified) and connected to client: the kernel
// then delivers only that client's packets to it.
func transferSocket(local netip.Addr, client netip.AddrPort) (int, error) {
	var la, ra unix.Sockaddr
	af := unix.AF_INET
	if client.Addr().Is4() {
		l4 := &unix.SockaddrInet4{}
		if local.Is4() {
			l4.Addr = local.As4()
		}
		la, ra = l4, &unix.SockaddrInet4{Addr: client.Addr().As4(), Port: int(client.Port())}
	} else {
		af = unix.AF_INET6
		l6 := &unix.SockaddrInet6{}
		if local.Is6() {
			l6.Addr = local.As16()
		}
		r6 := &unix.SockaddrInet6{Addr: client.Addr().As16(), Port: int(client.Port())}
		if z := client.Addr().Zone(); z != "" {
			if ifi, err := net.InterfaceByName(z); err == nil {
				r6.ZoneId, l6.ZoneId = uint32(ifi.Index), uint32(ifi.Index)
			}
		}
		la, ra = l6, r6
	}
	fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("transfer socket: %w", err)
	}
	if err := unix.Bind(fd, la); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("transfer socket: bind %s: %w", local, err)
	}
	if err := unix.Connect(fd, ra); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("transfer socket: connect %s: %w", client, err)
	}
	return fd, nil
}

// growReceiveBuffer sets the socket's receive buffer to size bytes, past
// net.core.rmem_max when the process may (CAP_NET_ADMIN).
func growReceiveBuffer(conn *net.UDPConn, size int) {
	if rc, err := conn.SyscallConn(); err == nil {
		var serr error
		rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		})
		if serr == nil {
			return
		}
	}
	conn.SetReadBuffer(size)
}

// enablePktinfo asks the kernel to tell, with each request, the address it
// was sent to, so that a server listening on all addresses answers from
// the one the client asked (a multi-homed boot server).
func enablePktinfo(conn *net.UDPConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		if err != nil {
			serr = err
			return
		}
		if _, v6 := sa.(*unix.SockaddrInet6); v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// pktinfoDst returns the destination address from IP_PKTINFO or
// IPV6_PKTINFO control messages (IPv4 on a dual-stack socket comes as a
// v4-mapped IPV6_PKTINFO), or the zero Addr.
func pktinfoDst(oob []byte) netip.Addr {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			var a [4]byte
			copy(a[:], m.Data[8:12]) // struct in_pktinfo: ifindex, spec_dst, addr
			return netip.AddrFrom4(a)
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			var a [16]byte
			copy(a[:], m.Data[:16]) // struct in6_pktinfo: addr, ifindex
			return netip.AddrFrom16(a).Unmap()
		}
	}
	return netip.Addr{}
}

// errReadOnly is what a write request gets.
var errReadOnly = fmt.Errorf("write requests refused: read-only boot server: %w", os.ErrPermission)

// errShuttingDown ends transfers when the server stops.
var errShuttingDown = errors.New("boot server shutting down")

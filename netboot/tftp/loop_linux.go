//go:build !tftp_portable

package tftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A worker runs many transfers in one event loop. Its transfers share a
// few UDP sockets of the worker's own (one per local address replies
// leave from), each transfer known by its client's address and port: the
// transfer's TID pair is (worker port, client port), unique as RFC 1350
// asks, and the loop moves the packets of many transfers per system call.
// recvmmsg takes every ACK waiting on a socket at once; the blocks they
// call for are queued and leave together in one sendmmsg. A window of
// blocks is one message with UDP segmentation offload (the kernel cuts it
// into datagrams after a single trip down the stack), or one message per
// block where GSO is not available. There is no goroutine per transfer,
// no hand-off between goroutines per block and no per-block allocation.
// The server runs a few workers (one per CPU, at most maxWorkers) and
// spreads transfers over them.
type worker struct {
	s    *Server
	epfd int
	wake int // eventfd: new transfers or stop

	mu      sync.Mutex
	pending []*transfer    // added by the server, adopted by the loop
	stopped bool           // under mu; the loop has stopped or is stopping
	again   []*clientState // under mu; clients that asked again (askedAgain)
	stopErr string         // what transfers are told when the loop stops
	socks   map[sockKey]int
	// hasPending is true while pending is not empty: the loop looks before
	// it drops a packet from a client it does not know yet.
	hasPending atomic.Bool

	// The listening socket (-1: none), the address replies leave from,
	// and whether each request's own destination is read instead.
	lfd     int
	local   netip.Addr
	needDst bool

	// Owned by the loop goroutine.
	reqBuf, reqOOB []byte // a request as read from lfd
	transfers      map[peerKey]*transfer
	timers         [backoffSteps + 1]timerList // by the transfer's wait: timers[k] waits Timeout<<k
	epoch          time.Time
	events         []unix.EpollEvent
	handled        int // packets received since the last wait
	in             recvBatch
	out            sendBatch
}

// loopTransfer is what the Linux loop keeps per transfer.
type loopTransfer struct {
	fd         int     // the worker's socket the transfer's packets leave from (shared, not the transfer's)
	peer       peerKey // the client, as the loop looks it up
	sa         [unix.SizeofSockaddrInet6]byte
	salen      uint32 // the client's raw sockaddr (sa) for sendto and sendmmsg
	deadline   int64  // ns since the event loop's epoch
	wait       int    // the timers list it is on: its wait is Timeout<<wait
	prev, next *transfer
}

// peerKey is a client address and port in the form the kernel gives it
// (IPv4 as v4-mapped IPv6, an IPv6 zone as its interface index).
type peerKey struct {
	ip    [16]byte
	port  uint16
	scope uint32
}

// sockKey names one of a worker's sockets: its local address (the zero
// address: any of the family), with the family told apart by v6.
type sockKey struct {
	ip    [16]byte
	scope uint32
	v6    bool
}

// timerList holds the transfers in the order their ACK deadlines expire.
// Every deadline on one list is "now + the same wait" (the worker keeps a
// list per backoff step), so moving a transfer to the tail when its
// deadline is renewed keeps the list sorted: no heap needed.
type timerList struct{ head, tail *transfer }

func (l *timerList) remove(t *transfer) {
	if t.prev != nil {
		t.prev.next = t.next
	} else if l.head == t {
		l.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else if l.tail == t {
		l.tail = t.prev
	}
	t.prev, t.next = nil, nil
}

func (l *timerList) pushBack(t *transfer) {
	t.prev, t.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = t
	} else {
		l.head = t
	}
	l.tail = t
}

// Batch sizes: packets taken per recvmmsg, and the room (in bytes of a
// packet) of one receive slot. Clients send ACKs and ERRORs only; a
// longer datagram is cut to the slot and read as what it starts with.
const (
	recvBatchLen = 64
	recvSlot     = 1024
	sendBatchLen = 64
)

// sockBuffer is the receive and send buffer each worker socket asks for:
// room for the ACKs of a storm's every client at once (root may exceed
// net.core.rmem_max and wmem_max).
const sockBuffer = 4 << 20

// recvBatch is recvmmsg's working memory.
type recvBatch struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	buf   []byte
}

// sendBatch is the packets queued for one socket, sent by flush.
type sendBatch struct {
	fd   int
	n    int // messages queued
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
	ts   []*transfer // each message's transfer
	oob  [][unix.SizeofCmsghdr + 8]byte
	buf  []byte // the packets, back to back
	used int
}

func newWorker(s *Server) (*worker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("tftp worker: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("tftp worker: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("tftp worker: epoll add eventfd: %w", err)
	}
	w := &worker{
		s:         s,
		epfd:      epfd,
		wake:      wake,
		lfd:       -1,
		socks:     map[sockKey]int{},
		transfers: map[peerKey]*transfer{},
		epoch:     time.Now(),
		events:    make([]unix.EpollEvent, 256),
	}
	in := &w.in
	in.msgs = make([]unix.Mmsghdr, recvBatchLen)
	in.iovs = make([]unix.Iovec, recvBatchLen)
	in.names = make([]unix.RawSockaddrInet6, recvBatchLen)
	in.buf = make([]byte, recvBatchLen*recvSlot)
	for i := range in.msgs {
		in.iovs[i] = unix.Iovec{Base: &in.buf[i*recvSlot], Len: recvSlot}
		in.msgs[i].Hdr.Iov, in.msgs[i].Hdr.Iovlen = &in.iovs[i], 1
		in.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&in.names[i]))
	}
	// Room for a whole window, or a batch of lock-step blocks, whichever
	// is more; a window sent without GSO is a message per block.
	stride := s.maxBlock + 4
	n := max(sendBatchLen, s.maxWindow)
	out := &w.out
	out.fd = -1
	out.msgs = make([]unix.Mmsghdr, n)
	out.iovs = make([]unix.Iovec, n)
	out.ts = make([]*transfer, n)
	out.oob = make([][unix.SizeofCmsghdr + 8]byte, n)
	out.buf = make([]byte, max(sendBatchLen, s.maxWindow)*stride)
	for i := range out.oob {
		// The UDP_SEGMENT control message; its value is set per send.
		h := (*unix.Cmsghdr)(unsafe.Pointer(&out.oob[i][0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
	}
	return w, nil
}

// listen makes the loop read requests from lfd, the listening socket,
// and run their transfers; local and needDst are as Server.accept takes
// them. It is called before run.
func (w *worker) listen(lfd int, local netip.Addr, needDst bool) error {
	w.lfd, w.local, w.needDst = lfd, local, needDst
	// Room for the largest UDP payload: a request is read whole, however
	// long its name, and answered, never cut short and dropped.
	w.reqBuf, w.reqOOB = make([]byte, maxDatagram), make([]byte, 128)
	err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(lfd)})
	if err == unix.EINVAL {
		// A kernel before 4.5: every waiting loop wakes for a request,
		// and those that find it gone go back to waiting.
		err = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)})
	}
	if err != nil {
		return fmt.Errorf("tftp worker: epoll add listening socket: %w", err)
	}
	return nil
}

// requests reads the requests waiting on the listening socket, a batch at
// most (the loop's transfers go on between batches), and starts each.
func (w *worker) requests() {
	s := w.s
	for range recvBatchLen {
		n, oobn, _, from, err := unix.Recvmsg(w.lfd, w.reqBuf, w.reqOOB, unix.MSG_DONTWAIT)
		if err != nil {
			if err != unix.EAGAIN && err != unix.EINTR {
				s.log.Debug("tftp: read request", "err", err)
			}
			return
		}
		client, ok := sockaddrAddrPort(from)
		if !ok {
			continue
		}
		req, dst, haveSlot, ok := s.accept(w.reqBuf[:n], client, w.local, w.needDst, w.reqOOB[:oobn])
		switch {
		case !ok:
		case haveSlot:
			w.start(req, client, dst)
		default:
			go s.start(req, client, dst, false) // waits for a slot
		}
	}
}

// sockaddrAddrPort is a request's client address and port as the rest of
// the server names it: IPv4 unmapped, an IPv6 zone as its interface name.
func sockaddrAddrPort(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), true
	case *unix.SockaddrInet6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.ZoneId != 0 {
			zone := strconv.Itoa(int(sa.ZoneId))
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				zone = ifi.Name
			}
			a = a.WithZone(zone)
		}
		return netip.AddrPortFrom(a.Unmap(), uint16(sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// start runs a request the loop read, holding a slot: open it, give it
// this worker's socket and queue its first packet with the loop's batch.
func (w *worker) start(req request, client netip.AddrPort, dst netip.Addr) {
	s := w.s
	defer s.starts.Done()
	t, _ := s.open(req, client, dst, true)
	if t == nil {
		return
	}
	if err := w.bind(t, dst, client); err != nil {
		if errors.Is(err, errShuttingDown) {
			s.refuse(client, dst, errCodeUndefined, errShuttingDown.Error())
		}
		s.finish(t, err)
		return
	}
	w.own(t)
	if t.oack != nil {
		w.arm(t)
		w.queue(t, t.oack)
		return
	}
	w.sendWindow(t, 1)
}

// bind gives t the worker socket for local (its address family is the
// client's) and the client's address in the kernel's form. It runs on the
// goroutine that starts the transfer, before the worker owns t.
func (w *worker) bind(t *transfer, local netip.Addr, client netip.AddrPort) error {
	var scope uint32
	if z := client.Addr().Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			scope = uint32(ifi.Index)
		}
	}
	v6 := !client.Addr().Is4()
	t.peer = peerKey{ip: client.Addr().As16(), port: client.Port()}
	if client.Addr().IsLinkLocalUnicast() {
		t.peer.scope = scope // as rawPeer reads it
	}
	if v6 {
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&t.sa))
		sa.Family = unix.AF_INET6
		sa.Addr = t.peer.ip
		sa.Scope_id = scope
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], client.Port())
		t.salen = unix.SizeofSockaddrInet6
	} else {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&t.sa))
		sa.Family = unix.AF_INET
		sa.Addr = client.Addr().As4()
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], client.Port())
		t.salen = unix.SizeofSockaddrInet4
	}
	k := sockKey{v6: v6}
	if local.IsValid() && !local.IsUnspecified() && local.Is6() == v6 {
		k.ip = local.As16()
		if v6 && local.IsLinkLocalUnicast() {
			k.scope = scope
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return errShuttingDown
	}
	fd, ok := w.socks[k]
	if !ok {
		var err error
		if fd, err = workerSocket(k); err != nil {
			return err
		}
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("transfer socket: epoll add: %w", err)
		}
		w.socks[k] = fd
	}
	t.fd = fd
	return nil
}

// workerSocket opens a non-blocking UDP socket bound to k's address on a
// port the kernel picks, with buffers for a storm.
func workerSocket(k sockKey) (int, error) {
	af := unix.AF_INET
	var la unix.Sockaddr
	if k.v6 {
		af = unix.AF_INET6
		la = &unix.SockaddrInet6{Addr: k.ip, ZoneId: k.scope}
	} else {
		la = &unix.SockaddrInet4{Addr: [4]byte(k.ip[12:])}
	}
	fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("transfer socket: %w", err)
	}
	// The kernel queues the ICMP errors that come back for the socket
	// (port unreachable: the client has gone), each with the address it
	// is about; clientsGone reads them. An unconnected socket hears of
	// them only so.
	if k.v6 {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1)
	} else {
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1)
	}
	if err := unix.Bind(fd, la); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("transfer socket: bind %s: %w", sockAddrString(k), err)
	}
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], sockBuffer) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], sockBuffer) // capped at the sysctl's maximum
		}
	}
	return fd, nil
}

func sockAddrString(k sockKey) string {
	if k.v6 {
		return netip.AddrFrom16(k.ip).String()
	}
	return netip.AddrFrom16(k.ip).Unmap().String()
}

// sendTo sends p to t's client at once (the first packet of a transfer,
// an error before the loop owns it).
func (w *worker) sendTo(t *transfer, p []byte) error {
	for range 16 {
		_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(t.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
			0, uintptr(unsafe.Pointer(&t.sa[0])), uintptr(t.salen))
		if errno == 0 {
			return nil
		}
		if errno != unix.EINTR && !icmpErrno(errno) {
			return errno
		}
		// The socket's pending error is about another client (see flush).
	}
	return unix.EAGAIN
}

// add hands a transfer to the loop. It reports false when the worker has
// stopped; the caller then ends the transfer itself.
func (w *worker) add(t *transfer) bool {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return false
	}
	w.pending = append(w.pending, t)
	w.hasPending.Store(true)
	w.poke()
	w.mu.Unlock()
	return true
}

// stop makes the loop end every transfer with an ERROR saying why, and
// return.
func (w *worker) stop(why string) {
	w.mu.Lock()
	if !w.stopped {
		w.stopped, w.stopErr = true, why
	}
	w.poke()
	w.mu.Unlock()
}

// poke wakes the loop. The caller holds mu: the loop closes wake under mu
// when it returns, and sets it to -1.
func (w *worker) poke() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(w.wake, one[:]) // EAGAIN only when the counter is huge: the loop is awake anyway
}

func (w *worker) now() int64 { return int64(time.Since(w.epoch)) }

// run is the event loop. It returns once stop was called and every
// transfer has been told and closed.
func (w *worker) run() {
	defer func() {
		w.mu.Lock()
		for _, fd := range w.socks {
			unix.Close(fd)
		}
		w.socks = nil
		unix.Close(w.wake) // under mu: poke writes to it under mu
		w.wake = -1
		w.mu.Unlock()
		unix.Close(w.epfd)
	}()
	for {
		w.flush()
		msec := -1
		if h := w.nextTimer(); h != nil {
			d := h.deadline - w.now()
			msec = int(max((d+int64(time.Millisecond)-1)/int64(time.Millisecond), 0))
		}
		n, err := w.wait(msec, w.handled > 1)
		w.handled = 0
		if err != nil && !errors.Is(err, unix.EINTR) {
			w.s.log.Error("tftp: epoll wait failed; ending this worker's transfers", "err", err)
			w.stop("boot server error")
			w.adopt()
			w.flush()
			return
		}
		for i := 0; i < n; i++ {
			fd := int(w.events[i].Fd)
			if fd == w.lfd {
				w.requests()
				continue
			}
			if fd == w.wake {
				if w.adopt() {
					w.flush()
					return
				}
				continue
			}
			if w.events[i].Events&unix.EPOLLERR != 0 {
				w.clientsGone(fd)
			}
			w.receive(fd)
		}
		now := w.now()
		for t := w.nextTimer(); t != nil && t.deadline <= now; t = w.nextTimer() {
			w.timeout(t)
		}
	}
}

// wait waits for events, up to msec milliseconds (-1: no limit). When
// busy (the last round handled several packets) it looks first without
// blocking, in a raw system call: in a storm events are nearly always
// waiting, and a look costs the runtime no system call bookkeeping
// (entersyscall, and the P taken away while the thread sleeps). With a
// single lock-step client the next ACK is never there yet, and the look
// would be one system call per block more.
func (w *worker) wait(msec int, busy bool) (int, error) {
	if busy || msec == 0 {
		r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(w.epfd), uintptr(unsafe.Pointer(&w.events[0])), uintptr(len(w.events)), 0, 0, 0)
		if errno == 0 && r > 0 || msec == 0 {
			if errno != 0 {
				return 0, errno
			}
			return int(r), nil
		}
	}
	return unix.EpollWait(w.epfd, w.events, msec)
}

// adopt takes the pending transfers into the loop. It returns true when
// the worker is stopping, after ending every transfer.
func (w *worker) adopt() bool {
	var b [8]byte
	unix.Read(w.wake, b[:])
	if w.takePending() {
		return false
	}
	w.mu.Lock()
	why := w.stopErr
	w.mu.Unlock()
	for _, t := range w.transfers {
		w.abort(t, why, errShuttingDown)
	}
	return true
}

// takePending moves the pending transfers into the loop (their first
// packet is out already: Server.start) and reports whether the worker is
// still running.
func (w *worker) takePending() (running bool) {
	w.mu.Lock()
	pending, again, stopped := w.pending, w.again, w.stopped
	w.pending, w.again = nil, nil
	w.hasPending.Store(false)
	w.mu.Unlock()
	for _, t := range pending {
		w.own(t)
		w.arm(t)
	}
	for _, c := range again {
		c.queued.Store(false)
		w.startedOver(c)
	}
	return !stopped
}

// own makes t one of the loop's transfers.
func (w *worker) own(t *transfer) {
	w.transfers[t.peer] = t
	t.client.t = t
	t.client.owner.Store(w)
}

// askedAgain queues c, a client whose transfer the loop runs and which
// started over (clientState.startedOver), for startedOver. A client is
// queued once until the loop has looked (clientState.queued), so the
// list holds at most one entry per transfer.
func (w *worker) askedAgain(c *clientState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.again = append(w.again, c)
	w.poke()
}

// errStartedOver ends the transfer of a client that started over.
var errStartedOver = errors.New("client started over: it asked again from the transfer's port after answering")

// startedOver ends c's transfer: c was reset and asks again, and gets a
// new transfer once this one has ended. The old transfer ends without an
// ERROR, which would reach the new client's port.
func (w *worker) startedOver(c *clientState) {
	if t := c.t; t != nil && w.transfers[t.peer] == t {
		w.end(t, errStartedOver)
	}
}

// arm renews t's ACK deadline: Timeout, doubled for each timeout in a
// row (backoff).
func (w *worker) arm(t *transfer) {
	w.timers[t.wait].remove(t)
	t.wait = min(t.retries, backoffSteps)
	t.deadline = w.now() + int64(ackWait(w.s.timeout, t.wait))
	w.timers[t.wait].pushBack(t)
}

// nextTimer is the transfer whose deadline comes first, or nil.
func (w *worker) nextTimer() *transfer {
	var first *transfer
	for i := range w.timers {
		if h := w.timers[i].head; h != nil && (first == nil || h.deadline < first.deadline) {
			first = h
		}
	}
	return first
}

// receive reads every packet waiting on the socket fd, a batch at a time,
// handles each and sends what they call for.
func (w *worker) receive(fd int) {
	in := &w.in
	for {
		for i := range in.msgs {
			in.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			in.msgs[i].Hdr.Flags = 0
		}
		r, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&in.msgs[0])), uintptr(len(in.msgs)),
			unix.MSG_DONTWAIT, 0, 0)
		if errno != 0 {
			if icmpErrno(errno) {
				// The socket's pending error, from an ICMP error
				// queued for some client: it is read from the queue.
				w.clientsGone(fd)
				continue
			}
			if errno != unix.EAGAIN && errno != unix.EINTR {
				w.s.log.Debug("tftp: receive", "err", errno)
			}
			return
		}
		n := int(r)
		w.handled += n
		for i := 0; i < n; i++ {
			key, ok := rawPeer(&in.names[i], in.msgs[i].Hdr.Namelen)
			if !ok {
				continue
			}
			t := w.transfers[key]
			if t == nil && w.hasPending.Load() {
				// The client answered before the loop adopted its
				// transfer (the first packet leaves from Server.start).
				w.takePending()
				t = w.transfers[key]
			}
			if t == nil || t.fd != fd {
				continue // a late packet of a transfer that ended, or a stranger's
			}
			w.packet(t, in.buf[i*recvSlot:i*recvSlot+int(min(in.msgs[i].Len, recvSlot))])
		}
		w.flush()
		if n < len(in.msgs) {
			return
		}
	}
}

// icmpErrno reports whether errno is one a socket reports for an ICMP
// error (IP_RECVERR), whichever packet or client it is about.
func icmpErrno(errno unix.Errno) bool {
	switch errno {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN:
		return true
	}
	return false
}

// clientsGone reads the ICMP errors queued on the socket fd and ends the
// transfer of each client whose port is closed (it was power-cycled, or
// gave up): its slot is free at once, not after Retries timeouts.
func (w *worker) clientsGone(fd int) {
	var p [64]byte
	var oob [256]byte
	for range 1024 {
		_, oobn, _, from, err := unix.Recvmsg(fd, p[:], oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			ipErr := m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR
			ip6Err := m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_RECVERR
			if !ipErr && !ip6Err || len(m.Data) < 4 {
				continue
			}
			// struct sock_extended_err starts with ee_errno.
			if errno := unix.Errno(binary.NativeEndian.Uint32(m.Data)); errno != unix.ECONNREFUSED {
				continue
			}
			key, ok := sockaddrPeer(from)
			if t := w.transfers[key]; ok && t != nil && t.fd == fd {
				w.end(t, fmt.Errorf("client gone: %w", unix.ECONNREFUSED))
			}
		}
	}
}

// sockaddrPeer is the peerKey of a decoded sockaddr.
func sockaddrPeer(sa unix.Sockaddr) (peerKey, bool) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		k := peerKey{port: uint16(sa.Port)}
		k.ip[10], k.ip[11] = 0xff, 0xff
		copy(k.ip[12:], sa.Addr[:])
		return k, true
	case *unix.SockaddrInet6:
		k := peerKey{ip: sa.Addr, port: uint16(sa.Port)}
		if sa.Addr[0] == 0xfe && sa.Addr[1]&0xc0 == 0x80 {
			k.scope = sa.ZoneId
		}
		return k, true
	}
	return peerKey{}, false
}

// rawPeer is the peerKey of a sockaddr recvmmsg filled in.
func rawPeer(sa *unix.RawSockaddrInet6, n uint32) (peerKey, bool) {
	switch {
	case sa.Family == unix.AF_INET && n >= unix.SizeofSockaddrInet4:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		k := peerKey{port: binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:])}
		k.ip[10], k.ip[11] = 0xff, 0xff
		copy(k.ip[12:], s4.Addr[:])
		return k, true
	case sa.Family == unix.AF_INET6 && n >= unix.SizeofSockaddrInet6:
		k := peerKey{ip: sa.Addr, port: binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])}
		if sa.Addr[0] == 0xfe && sa.Addr[1]&0xc0 == 0x80 { // link-local: the zone tells it apart
			k.scope = sa.Scope_id
		}
		return k, true
	}
	return peerKey{}, false
}

// packet handles one packet from t's client.
func (w *worker) packet(t *transfer, p []byte) {
	if block, ok := parseAck(p); ok {
		w.ack(t, block)
		return
	}
	if code, msg, ok := parseError(p); ok {
		w.end(t, clientError{code, msg})
		return
	}
	// Anything else from a read transfer's client is ignored: a stray
	// duplicate must not end a boot.
}

// ack handles an ACK for block (16 bits on the wire) following RFC 7440:
// an ACK at or beyond the first unacknowledged block moves the window and
// sends the next one from the block after it, whether it acknowledges the
// whole window or only part of it (the receiver saw a gap or timed out and
// acknowledged the last block it has in order). An ACK of the block just
// before the window is a duplicate: in lock-step it is ignored (RFC 1350's
// Sorcerer's Apprentice fix, the timeout resends), with a window it means
// the receiver lost the window's first block, so the window is resent once.
func (w *worker) ack(t *transfer, block uint16) {
	if t.oack != nil {
		if block == 0 {
			t.oack = nil
			t.retries = 0
			t.client.answer()
			w.sendWindow(t, 1)
		}
		return
	}
	prev := t.base - 1
	abs := prev + uint64(block-uint16(prev))
	if abs > t.sent {
		return // not a block we sent recently: stale or bogus
	}
	if abs == prev {
		if t.window > 1 && !t.dupResent {
			t.dupResent = true
			w.sendWindow(t, t.base)
		}
		return
	}
	if t.base == 1 {
		t.client.answer()
	}
	t.base = abs + 1
	t.retries = 0
	t.dupResent = false
	if abs == t.nblocks {
		w.end(t, nil)
		return
	}
	w.sendWindow(t, t.base)
}

// timeout resends what the client has not acknowledged, or gives up.
func (w *worker) timeout(t *transfer) {
	t.retries++
	if t.retries > w.s.retries {
		w.abort(t, "timeout waiting for ACK", fmt.Errorf("no ACK in %v (%d tries)", patience(w.s.timeout, w.s.retries), t.retries))
		return
	}
	if t.oack != nil {
		w.arm(t)
		w.queue(t, t.oack)
		return
	}
	w.s.retransmits.Add(1)
	w.sendWindow(t, t.base)
}

// reserve makes room in the send batch for n bytes in msgs messages to
// t's socket, flushing what is queued if need be, and returns the bytes.
func (w *worker) reserve(t *transfer, n, msgs int) []byte {
	b := &w.out
	if b.n > 0 && (b.fd != t.fd || b.n+msgs > len(b.msgs) || b.used+n > len(b.buf)) {
		w.flush()
	}
	b.fd = t.fd
	return b.buf[b.used : b.used+n]
}

// push queues p (in the batch's buffer, from reserve) as one message to
// t's client; seg > 0 sends it as datagrams of seg bytes (GSO).
func (w *worker) push(t *transfer, p []byte, seg int) {
	b := &w.out
	i := b.n
	b.iovs[i] = unix.Iovec{Base: &p[0], Len: uint64(len(p))}
	b.msgs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{Name: &t.sa[0], Namelen: t.salen, Iov: &b.iovs[i], Iovlen: 1}}
	if seg > 0 {
		binary.NativeEndian.PutUint16(b.oob[i][unix.CmsgLen(0):], uint16(seg))
		b.msgs[i].Hdr.Control = &b.oob[i][0]
		b.msgs[i].Hdr.SetControllen(len(b.oob[i]))
	}
	b.ts[i] = t
	b.n++
	b.used += len(p)
}

// queue sends a copy of p (an OACK, an ERROR) to t's client with the batch.
func (w *worker) queue(t *transfer, p []byte) {
	buf := w.reserve(t, len(p), 1)
	copy(buf, p)
	w.push(t, buf, 0)
}

// sendWindow queues blocks from..from+window-1 (up to the last block) and
// renews the deadline.
func (w *worker) sendWindow(t *transfer, from uint64) {
	w.arm(t)
	last := min(from+uint64(t.window)-1, t.nblocks)
	count := int(last - from + 1)
	stride := t.blk + 4
	gso := count > 1 && w.s.loop.gso.Load()
	msgs := count
	per := max(min(gsoMaxBytes/stride, gsoMaxSegments), 1)
	if gso {
		msgs = (count + per - 1) / per
	}
	buf := w.reserve(t, count*stride, msgs)
	end := 0
	for i := 0; i < count; i++ {
		b := from + uint64(i)
		pkt := buf[i*stride : (i+1)*stride]
		binary.BigEndian.PutUint16(pkt, opDATA)
		binary.BigEndian.PutUint16(pkt[2:], uint16(b))
		off := int64(b-1) * int64(t.blk)
		n := int(min(int64(t.blk), t.size-off))
		if err := t.readBlock(pkt[4:4+n], off); err != nil {
			w.abort(t, "read error", err)
			return
		}
		end = i*stride + 4 + n
		if !gso {
			w.push(t, pkt[:4+n], 0)
		}
	}
	if gso {
		// The window's packets lie back to back, each stride bytes but
		// the last; the kernel cuts each message into datagrams of
		// stride bytes.
		for off := 0; off < end; off += per * stride {
			m := buf[off:min(off+per*stride, end)]
			seg := stride
			if len(m) <= stride {
				seg = 0 // a single datagram needs no segmentation
			}
			w.push(t, m, seg)
		}
	}
	if last > t.sent {
		t.sent = last
	}
}

// gsoMaxBytes bounds one GSO message (its datagrams must fit a 64 KiB
// super-packet) and gsoMaxSegments its datagram count.
const (
	gsoMaxBytes    = 65000
	gsoMaxSegments = 64
)

// flush sends the queued packets, as few sendmmsg calls as the kernel
// allows. A full socket buffer loses packets like the network would: the
// client's gap ACK or the timeout recovers them.
func (w *worker) flush() {
	b := &w.out
	pending := 0
	for i := 0; i < b.n; {
		r, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(b.fd), uintptr(unsafe.Pointer(&b.msgs[i])), uintptr(b.n-i), 0, 0, 0)
		switch {
		case errno == 0:
			i += int(r)
		case errno == unix.EINTR:
		case icmpErrno(errno) && pending < 16:
			// The socket's pending error, about another client (its
			// ICMP error waits in the queue); reporting it cleared it,
			// and the message is sent again.
			pending++
		default:
			w.sendFailed(i, errno) // msgs[i] was not sent
			i++
		}
	}
	clear(b.ts[:b.n])
	b.n, b.used = 0, 0
}

// sendFailed handles the send error of message i of the batch.
func (w *worker) sendFailed(i int, errno unix.Errno) {
	b := &w.out
	m, t := &b.msgs[i], b.ts[i]
	if errno == unix.EAGAIN || errno == unix.ENOBUFS {
		return
	}
	if m.Hdr.Controllen > 0 && (errno == unix.EIO || errno == unix.EINVAL || errno == unix.ENOPROTOOPT) {
		// No GSO on this path: one datagram per block from now on, this
		// window's included.
		if w.s.loop.gso.CompareAndSwap(true, false) {
			w.s.log.Info("tftp: UDP segmentation offload unavailable, sending windows with sendmmsg", "err", errno)
		}
		seg := int(binary.NativeEndian.Uint16(b.oob[i][unix.CmsgLen(0):]))
		p := unsafe.Slice(b.iovs[i].Base, b.iovs[i].Len)
		for len(p) > 0 {
			n := min(seg, len(p))
			if err := w.sendTo(t, p[:n]); err != nil && err != unix.EAGAIN {
				break
			}
			p = p[n:]
		}
		return
	}
	if w.transfers[t.peer] == t {
		w.end(t, fmt.Errorf("send: %w", errno))
	}
}

// abort tells the client why the transfer ends (an ERROR packet) and ends it.
func (w *worker) abort(t *transfer, why string, err error) {
	w.queue(t, appendError(nil, errCodeUndefined, why))
	w.end(t, err)
}

// end removes the transfer from the loop and releases it; err nil means
// the client acknowledged the last block. Packets queued for it still go.
func (w *worker) end(t *transfer, err error) {
	if w.transfers[t.peer] != t {
		return
	}
	delete(w.transfers, t.peer)
	w.timers[t.wait].remove(t)
	w.s.finish(t, err)
}

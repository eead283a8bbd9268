//go:build !tftp_portable

package tftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A worker runs many transfers in one event loop, the way dnsmasq does:
// every transfer owns a connected, non-blocking UDP socket, the loop waits
// for ACKs on all of them with epoll and answers each at once from the
// same goroutine. There is no goroutine per transfer, no hand-off between
// goroutines per block and no per-block allocation; a window of blocks
// goes out in one sendmsg with UDP segmentation offload (the kernel cuts
// it into datagrams after a single trip down the stack), or one sendmmsg
// where GSO is not available. The server runs a few workers (one per
// CPU, at most maxWorkers) and spreads transfers over them.
type worker struct {
	s    *Server
	epfd int
	wake int // eventfd: new transfers or stop

	mu      sync.Mutex
	pending []*transfer // added by the server, adopted by the loop
	stopped bool        // under mu; the loop has stopped or is stopping
	stopErr string      // what transfers are told when the loop stops

	// Owned by the loop goroutine.
	transfers map[int32]*transfer
	timers    timerList
	epoch     time.Time
	events    []unix.EpollEvent
	scratch   []byte         // window × (block + 4) bytes of outgoing packets
	msgs      []unix.Mmsghdr // one per packet of a window
	iovs      []unix.Iovec
	rbuf      []byte // incoming packet
	gsoOOB    [unix.SizeofCmsghdr + 8]byte
}

// timerList holds the transfers in the order their ACK deadlines expire.
// Every deadline is "now + the same timeout", so moving a transfer to the
// tail when its deadline is renewed keeps the list sorted: no heap needed.
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
		transfers: map[int32]*transfer{},
		epoch:     time.Now(),
		events:    make([]unix.EpollEvent, 256),
		rbuf:      make([]byte, 1500),
	}
	// The UDP_SEGMENT control message; its value is set per send.
	h := (*unix.Cmsghdr)(unsafe.Pointer(&w.gsoOOB[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	win := s.maxWindow
	w.scratch = make([]byte, win*(s.maxBlock+4))
	w.msgs = make([]unix.Mmsghdr, win)
	w.iovs = make([]unix.Iovec, win)
	return w, nil
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
	w.mu.Unlock()
	w.poke()
	return true
}

// stop makes the loop end every transfer with an ERROR saying why, and
// return.
func (w *worker) stop(why string) {
	w.mu.Lock()
	if !w.stopped {
		w.stopped, w.stopErr = true, why
	}
	w.mu.Unlock()
	w.poke()
}

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
		unix.Close(w.epfd)
		unix.Close(w.wake)
	}()
	for {
		msec := -1
		if h := w.timers.head; h != nil {
			d := h.deadline - w.now()
			msec = int(max((d+int64(time.Millisecond)-1)/int64(time.Millisecond), 0))
		}
		n, err := unix.EpollWait(w.epfd, w.events, msec)
		if err != nil && !errors.Is(err, unix.EINTR) {
			w.s.log.Error("tftp: epoll wait failed; ending this worker's transfers", "err", err)
			w.stop("boot server error")
			w.adopt()
			return
		}
		for i := 0; i < n; i++ {
			ev := w.events[i]
			if int(ev.Fd) == w.wake {
				if w.adopt() {
					return
				}
				continue
			}
			if t := w.transfers[ev.Fd]; t != nil {
				w.readable(t)
			}
		}
		now := w.now()
		for t := w.timers.head; t != nil && t.deadline <= now; t = w.timers.head {
			w.timeout(t)
		}
	}
}

// adopt takes the pending transfers into the loop and starts them. It
// returns true when the worker is stopping, after ending every transfer.
func (w *worker) adopt() bool {
	var b [8]byte
	unix.Read(w.wake, b[:])
	w.mu.Lock()
	pending, stopped, why := w.pending, w.stopped, w.stopErr
	w.pending = nil
	w.mu.Unlock()
	for _, t := range pending {
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, t.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(t.fd)}); err != nil {
			w.s.finish(t, fmt.Errorf("epoll add: %w", err))
			continue
		}
		w.transfers[int32(t.fd)] = t
		w.arm(t) // the first packet is out already (Server.start)
	}
	if !stopped {
		return false
	}
	for _, t := range w.transfers {
		w.abort(t, why, errShuttingDown)
	}
	return true
}

// arm renews t's ACK deadline.
func (w *worker) arm(t *transfer) {
	t.deadline = w.now() + int64(w.s.timeout)
	w.timers.remove(t)
	w.timers.pushBack(t)
}

// readable reads one packet from t's socket (the socket is level-triggered:
// more packets wake the loop again).
func (w *worker) readable(t *transfer) {
	n, err := rawRead(t.fd, w.rbuf)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		// ECONNREFUSED: the client's port is closed, it has gone.
		w.end(t, fmt.Errorf("client gone: %w", err))
		return
	}
	p := w.rbuf[:n]
	if block, ok := parseAck(p); ok {
		w.ack(t, block)
		return
	}
	if code, msg, ok := parseError(p); ok {
		w.end(t, clientError{code, msg})
		return
	}
	// Anything else on a read transfer's socket is ignored: a stray
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
		w.abort(t, "timeout waiting for ACK", fmt.Errorf("no ACK after %d tries of %v", t.retries, w.s.timeout))
		return
	}
	if t.oack != nil {
		w.sendOACK(t)
		return
	}
	w.s.retransmits.Add(1)
	w.sendWindow(t, t.base)
}

func (w *worker) sendOACK(t *transfer) {
	w.arm(t)
	if _, err := unix.Write(t.fd, t.oack); err != nil && !errors.Is(err, unix.EAGAIN) {
		w.end(t, fmt.Errorf("send OACK: %w", err))
	}
}

// sendWindow sends blocks from..from+window-1 (up to the last block) and
// renews the deadline.
func (w *worker) sendWindow(t *transfer, from uint64) {
	w.arm(t)
	last := min(from+uint64(t.window)-1, t.nblocks)
	count := int(last - from + 1)
	stride := t.blk + 4
	for i := 0; i < count; i++ {
		b := from + uint64(i)
		pkt := w.scratch[i*stride : (i+1)*stride]
		binary.BigEndian.PutUint16(pkt, opDATA)
		binary.BigEndian.PutUint16(pkt[2:], uint16(b))
		off := int64(b-1) * int64(t.blk)
		n := int(min(int64(t.blk), t.size-off))
		if err := t.readBlock(pkt[4:4+n], off); err != nil {
			w.abort(t, "read error", err)
			return
		}
		w.iovs[i] = unix.Iovec{Base: &pkt[0], Len: uint64(4 + n)}
		w.msgs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{Iov: &w.iovs[i], Iovlen: 1}}
	}
	if last > t.sent {
		t.sent = last
	}
	var err error
	switch {
	case count == 1:
		err = rawWrite(t.fd, unsafe.Slice(w.iovs[0].Base, w.iovs[0].Len))
	case w.s.loop.gso.Load():
		// UDP GSO: the window's packets lie back to back in scratch, each
		// stride bytes but the last; the kernel cuts the buffer into
		// datagrams of stride bytes, after one trip down the stack.
		end := (count-1)*stride + int(w.iovs[count-1].Len)
		err = w.sendGSO(t.fd, w.scratch[:end], stride)
		if errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT) {
			// No GSO on this path: one datagram per message from now on.
			w.s.loop.gso.Store(false)
			w.s.log.Info("tftp: UDP segmentation offload unavailable, sending windows with sendmmsg", "err", err)
			err = sendmmsg(t.fd, w.msgs[:count])
		}
	default:
		err = sendmmsg(t.fd, w.msgs[:count])
	}
	// A full socket buffer loses packets like the network would: the
	// client's gap ACK or the timeout recovers them.
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		w.end(t, fmt.Errorf("send block %d: %w", from, err))
	}
}

// gsoMaxBytes bounds one GSO send (the datagrams of one call must fit a
// 64 KiB super-packet) and gsoMaxSegments its datagram count.
const (
	gsoMaxBytes    = 65000
	gsoMaxSegments = 64
)

// sendGSO sends buf as datagrams of seg bytes (the last may be shorter)
// with UDP_SEGMENT, in as few calls as the limits allow.
func (w *worker) sendGSO(fd int, buf []byte, seg int) error {
	per := max(min(gsoMaxBytes/seg, gsoMaxSegments), 1)
	oob := w.gsoOOB[:]
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(seg))
	for len(buf) > 0 {
		n := min(len(buf), per*seg)
		if n <= seg {
			// A single datagram needs no segmentation.
			if _, err := unix.Write(fd, buf[:n]); err != nil {
				return err
			}
		} else if err := unix.Sendmsg(fd, buf[:n], oob, nil, 0); err != nil {
			return err
		}
		buf = buf[n:]
	}
	return nil
}

// rawRead and rawWrite are read(2) and write(2) on a non-blocking socket
// without the runtime's system call bookkeeping (entersyscall and
// exitsyscall, which may hand the P to another thread): the socket never
// blocks, and a lock-step transfer makes two of these per block.
func rawRead(fd int, p []byte) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func rawWrite(fd int, p []byte) error {
	r, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if errno != 0 {
		return errno
	}
	if int(r) != len(p) {
		return fmt.Errorf("short datagram write: %d of %d bytes", r, len(p))
	}
	return nil
}

// sendmmsg sends all msgs on the connected socket fd, one system call per
// call of the kernel's sendmmsg (which may send fewer than asked).
func sendmmsg(fd int, msgs []unix.Mmsghdr) error {
	for len(msgs) > 0 {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		if errno != 0 {
			return errno
		}
		msgs = msgs[r:]
	}
	return nil
}

// abort tells the client why the transfer ends (an ERROR packet) and ends it.
func (w *worker) abort(t *transfer, why string, err error) {
	unix.Write(t.fd, appendError(nil, errCodeUndefined, why))
	w.end(t, err)
}

// end removes the transfer from the loop and closes it; err nil means the
// client acknowledged the last block.
func (w *worker) end(t *transfer, err error) {
	if _, ok := w.transfers[int32(t.fd)]; !ok {
		return
	}
	delete(w.transfers, int32(t.fd))
	w.timers.remove(t)
	// Closing the socket also drops it from the epoll set.
	w.s.finish(t, err)
}

//go:build !tftp_portable

package tftp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loopState is how transfers run on Linux: in a few event loops
// (worker), which also read the requests; a loop's transfers share its
// sockets.
type loopState struct {
	workers []*worker
	next    atomic.Uint32
	// gso is true while windows go out with UDP segmentation offload
	// (one sendmsg per window); the first refusal turns it off.
	gso atomic.Bool
}

func (l *loopState) init() { l.gso.Store(true) }

// loopClient is how a request finds the loop running its client's
// transfer (clientState).
type loopClient struct {
	owner atomic.Pointer[worker] // the loop running the transfer, once one does
	t     *transfer              // the transfer; the owner's loop alone reads and writes it
}

// askedAgain tells the loop running c's transfer that c asked again after
// it had answered.
func (l *loopState) askedAgain(c *clientState) {
	if w := c.owner.Load(); w != nil {
		w.askedAgain(c)
	}
}

// maxWorkers bounds the event loops.
const maxWorkers = 4

// serve runs the event loops until ctx ends, then ends every transfer
// (see Serve). The loops read the requests themselves: the listening
// socket is in every loop's epoll set (EPOLLEXCLUSIVE: a request wakes one
// waiting loop), and the loop that reads a request runs its transfer. A
// request costs no wake-up of another thread or goroutine, and its first
// packet leaves with the loop's next batch.
func (s *Server) serve(ctx context.Context, udp *net.UDPConn) error {
	local := udp.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	needDst := local.IsUnspecified()
	if needDst {
		if err := enablePktinfo(udp); err != nil {
			s.log.Warn("tftp: cannot learn request destinations; replies leave from the address the kernel picks", "err", err)
			needDst = false
		}
	}
	// A storm's requests arrive together: room for a few thousand of them
	// while the loops start transfers (root may exceed rmem_max).
	growReceiveBuffer(udp, 4<<20)
	// The loops read a descriptor of their own for the socket, so the
	// runtime's poller, which holds udp's, never reads it.
	lfd, err := dupSocket(udp)
	if err != nil {
		return fmt.Errorf("boot server: tftp: %w", err)
	}
	// Each request carries the time it reached the host: a late copy of
	// a client's request is told from a reset client's new one by it
	// (clientState.startedOver).
	if err := unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		s.log.Warn("tftp: no receive times on requests; a client reset mid-transfer waits for its old transfer to give up", "err", err)
	}

	// One event loop per CPU: most of a block's cost is the kernel's UDP
	// send path, which runs on the loop's thread, so a storm that keeps
	// one loop busy is served faster by a loop on every CPU; and where
	// the clients share the machine (a bench, many client processes) a
	// single thread gets a single process's share of the CPUs.
	// Every loop exists before any runs: a loop hands requests that wait
	// for a slot to any of them.
	n := min(max(runtime.GOMAXPROCS(0), 1), maxWorkers)
	for range n {
		w, err := newWorker(s)
		if err == nil {
			s.loop.workers = append(s.loop.workers, w)
			err = w.listen(lfd, local, needDst)
		}
		if err != nil {
			for _, w := range s.loop.workers {
				unix.Close(w.epfd)
				unix.Close(w.wake)
			}
			unix.Close(lfd)
			return fmt.Errorf("boot server: tftp: %w", err)
		}
	}
	var loops sync.WaitGroup
	for _, w := range s.loop.workers {
		loops.Go(w.run)
	}
	<-ctx.Done()
	close(s.stop) // requests waiting for a slot give up
	for _, w := range s.loop.workers {
		w.stop(errShuttingDown.Error())
	}
	loops.Wait()
	s.starts.Wait() // a request that got a slot meanwhile was refused (bind)
	unix.Close(lfd)
	return nil
}

// dupSocket returns a descriptor of its own for udp's socket.
func dupSocket(udp *net.UDPConn) (int, error) {
	rc, err := udp.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("listening socket: dup: %w", derr)
	}
	return fd, nil
}

// start runs one request up to the point where a worker owns it: open
// it (slot, content, options), give it a worker's socket and send the
// first packet.
func (s *Server) start(req request, client netip.AddrPort, dst netip.Addr, haveSlot bool) {
	defer s.starts.Done()
	t, log := s.open(req, client, dst, haveSlot)
	if t == nil {
		return
	}
	w := s.loop.workers[int(s.loop.next.Add(1))%len(s.loop.workers)]
	if err := w.bind(t, dst, client); err != nil {
		if errors.Is(err, errShuttingDown) {
			s.refuse(client, dst, errCodeUndefined, errShuttingDown.Error())
		}
		s.finish(t, err)
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
			s.finishQuiet(t) // the socket is the worker's: it stays open
			w.sendTo(t, appendError(nil, errCodeUndefined, "read error"))
			return
		}
		t.sent = 1
	}
	// The worker has the transfer before the packet leaves: the client's
	// answer finds it. A lost first packet is sent again on the timeout.
	if !w.add(t) {
		w.sendTo(t, appendError(nil, errCodeUndefined, errShuttingDown.Error()))
		s.finish(t, errShuttingDown)
		return
	}
	w.sendTo(t, first)
}

// refuse answers a request with an ERROR from a socket of its own, as the
// first packet of a transfer would come.
func (s *Server) refuse(client netip.AddrPort, dst netip.Addr, code uint16, msg string) {
	fd, err := transferSocket(dst, client)
	if err != nil {
		s.log.Debug("tftp: cannot send error", "client", client.String(), "err", err)
		return
	}
	unix.Write(fd, appendError(nil, code, msg))
	unix.Close(fd)
}

// finishQuiet releases what the transfer holds (the socket is its
// worker's).
func (s *Server) finishQuiet(t *transfer) { s.release(t) }

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

// arrivalTime is the receive time of a request from its SO_TIMESTAMPNS
// control message; zero without one.
func arrivalTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
			return time.Unix(int64(ts.Sec), int64(ts.Nsec))
		}
	}
	return time.Time{}
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

//go:build !linux || tftp_portable

package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// loopState is how transfers run where there is no epoll loop: each in a
// goroutine of its own, on a connected net.UDPConn with read deadlines.
// Correct, not fast: a boot server for a lab runs on Linux. Linux builds
// with the tftp_portable tag use it too, so that its tests run there.
type loopState struct {
	running sync.WaitGroup
}

func (l *loopState) init() {}

// loopTransfer is empty here: a transfer's goroutine holds its socket.
type loopTransfer struct{}

// loopClient is empty here: see askedAgain.
type loopClient struct{}

// askedAgain does nothing here: a client that started over on the port
// of its old transfer asks again until that transfer has given up.
func (l *loopState) askedAgain(*clientState) {}

// serve reads requests on udp until ctx ends, then ends every transfer
// (see Serve).
func (s *Server) serve(ctx context.Context, udp *net.UDPConn) error {
	local := udp.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	err := s.listenUntil(ctx, udp, local, false)
	s.starts.Wait()       // every transfer has its goroutine or is done
	s.loop.running.Wait() // each tells its client and ends on s.stop
	return err
}

// pktinfoDst is never asked here: listen runs without needDst.
func pktinfoDst([]byte) netip.Addr { return netip.Addr{} }

// arrivalTime is unknown here: requests carry no receive time, so a
// client that started over waits for its old transfer to give up
// (clientState.startedOver).
func arrivalTime([]byte) time.Time { return time.Time{} }

// start opens the request and runs the transfer in a goroutine.
func (s *Server) start(req request, client netip.AddrPort, dst netip.Addr, haveSlot bool) {
	defer s.starts.Done()
	t, log := s.open(req, client, dst, haveSlot)
	if t == nil {
		return
	}
	conn, err := transferConn(dst, client)
	if err != nil {
		log.Warn("transfer failed", "err", err)
		s.finishQuiet(t)
		return
	}
	s.loop.running.Add(1)
	go func() {
		defer s.loop.running.Done()
		err := s.run(t, conn)
		conn.Close()
		s.finish(t, err)
	}()
}

// run sends t on conn until the client acknowledged the last block, gave
// up, stayed silent for Retries timeouts, or the server stops. The ACK
// handling follows RFC 7440 as the Linux event loop does (worker.ack).
func (s *Server) run(t *transfer, conn *net.UDPConn) error {
	// On stop, a deadline in the past wakes the read below; the loop
	// looks at s.stop after setting each deadline, so none is lost.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-s.stop:
			conn.SetReadDeadline(time.Now())
		case <-done:
		}
	}()
	abort := func(why string, err error) error {
		conn.Write(appendError(nil, errCodeUndefined, why))
		return err
	}
	// The wait for an ACK starts at each send (a duplicate ACK that is
	// ignored does not renew it) and doubles with each timeout in a row.
	arm := func() { conn.SetReadDeadline(time.Now().Add(ackWait(s.timeout, t.retries))) }
	buf := make([]byte, t.window*(t.blk+4))
	send := func(from uint64) error {
		last := min(from+uint64(t.window)-1, t.nblocks)
		for b := from; b <= last; b++ {
			off := int64(b-1) * int64(t.blk)
			n := int(min(int64(t.blk), t.size-off))
			pkt := buf[:4+n]
			binary.BigEndian.PutUint16(pkt, opDATA)
			binary.BigEndian.PutUint16(pkt[2:], uint16(b))
			if err := t.readBlock(pkt[4:], off); err != nil {
				return abort("read error", err)
			}
			if _, err := conn.Write(pkt); err != nil {
				return fmt.Errorf("send block %d: %w", b, err)
			}
		}
		t.sent = max(t.sent, last)
		arm()
		return nil
	}
	first := func() error {
		if t.oack != nil {
			if _, err := conn.Write(t.oack); err != nil {
				return fmt.Errorf("send OACK: %w", err)
			}
			arm()
			return nil
		}
		return send(t.base)
	}
	if err := first(); err != nil {
		return err
	}
	rbuf := make([]byte, 1500)
	for {
		select {
		case <-s.stop:
			return abort(errShuttingDown.Error(), errShuttingDown)
		default:
		}
		n, err := conn.Read(rbuf)
		select {
		case <-s.stop:
			return abort(errShuttingDown.Error(), errShuttingDown)
		default:
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.retries++
			if t.retries > s.retries {
				return abort("timeout waiting for ACK", fmt.Errorf("no ACK in %v (%d tries)", patience(s.timeout, s.retries), t.retries))
			}
			if t.oack == nil {
				s.retransmits.Add(1)
			}
			if err := first(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("client gone: %w", err)
		}
		p := rbuf[:n]
		if code, msg, ok := parseError(p); ok {
			return clientError{code, msg}
		}
		block, ok := parseAck(p)
		if !ok {
			continue // a stray packet must not end a boot
		}
		if t.oack != nil {
			if block == 0 {
				t.oack = nil
				t.retries = 0
				if err := send(1); err != nil {
					return err
				}
			}
			continue
		}
		prev := t.base - 1
		abs := prev + uint64(block-uint16(prev))
		if abs > t.sent {
			continue // stale or bogus
		}
		if abs == prev {
			if t.window > 1 && !t.dupResent {
				t.dupResent = true
				if err := send(t.base); err != nil {
					return err
				}
			}
			continue
		}
		t.base = abs + 1
		t.retries = 0
		t.dupResent = false
		if abs == t.nblocks {
			return nil
		}
		if err := send(t.base); err != nil {
			return err
		}
	}
}

// refuse answers a request with an ERROR from a socket of its own, as the
// first packet of a transfer would come.
func (s *Server) refuse(client netip.AddrPort, dst netip.Addr, code uint16, msg string) {
	conn, err := transferConn(dst, client)
	if err != nil {
		s.log.Debug("tftp: cannot send error", "client", client.String(), "err", err)
		return
	}
	conn.Write(appendError(nil, code, msg))
	conn.Close()
}

// finishQuiet releases what the transfer holds (its goroutine closes the
// socket).
func (s *Server) finishQuiet(t *transfer) { s.release(t) }

// transferConn opens a UDP socket bound to local (any address if invalid
// or unspecified) and connected to client.
func transferConn(local netip.Addr, client netip.AddrPort) (*net.UDPConn, error) {
	var la *net.UDPAddr
	if local.IsValid() && !local.IsUnspecified() && local.Is4() == client.Addr().Is4() {
		la = net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	conn, err := net.DialUDP("udp", la, net.UDPAddrFromAddrPort(client))
	if err != nil {
		return nil, fmt.Errorf("transfer socket: %w", err)
	}
	return conn, nil
}

// listenUntil reads requests on udp until ctx ends or the listener fails,
// then closes s.stop and waits for the listener to return. Transfers still
// running are the platform loop's to end.
func (s *Server) listenUntil(ctx context.Context, udp *net.UDPConn, local netip.Addr, needDst bool) error {
	lerr := make(chan error, 1)
	go func() { lerr <- s.listen(udp, local, needDst) }()
	var err error
	select {
	case err = <-lerr:
		err = fmt.Errorf("boot server: tftp %s: %w", udp.LocalAddr(), err)
	case <-ctx.Done():
	}
	close(s.stop)
	udp.SetReadDeadline(time.Now()) // wakes the listener
	if err == nil {
		<-lerr
	}
	return err
}

// listen reads requests until the server stops. local is the address
// replies leave from; with needDst, each request's own destination is read
// from its control message instead (pktinfoDst).
func (s *Server) listen(conn *net.UDPConn, local netip.Addr, needDst bool) error {
	// Room for the largest UDP payload: a request is read whole, however
	// long its name, and answered, never cut short and dropped.
	buf := make([]byte, maxDatagram)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := conn.ReadMsgUDPAddrPort(buf, oob)
		select {
		case <-s.stop:
			return nil
		default:
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			s.log.Debug("tftp: read request", "err", err)
			continue
		}
		client := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		req, dst, haveSlot, ok := s.accept(buf[:n], client, local, needDst, oob[:oobn])
		if !ok {
			continue
		}
		// The common case (a slot is free) starts the transfer right here:
		// its first packet leaves without waiting for another goroutine
		// or thread to wake up. Only a request that must wait for a slot
		// gets a goroutine of its own.
		if haveSlot {
			s.start(req, client, dst, true)
		} else {
			go s.start(req, client, dst, false)
		}
	}
}

package netboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"github.com/pin/tftp/v3"
)

// tftpEngine serves the boot root over TFTP with pin/tftp. The boot server
// owns the UDP socket and hands it to pin/tftp, so that a later engine
// (RFC 7440 windowsize, which pin/tftp lacks) can take the socket over and
// keep using Server.open for what to send.
type tftpEngine struct {
	s   *Server
	srv *tftp.Server
	// stop is closed when Serve's context ends; transfers in flight then
	// abort at their next block.
	stop chan struct{}
}

func newTFTPEngine(s *Server) *tftpEngine {
	e := &tftpEngine{s: s, stop: make(chan struct{})}
	srv := tftp.NewServer(e.read, e.write)
	srv.SetBlockSizeNegotiation(false)
	srv.SetBlockSize(s.cfg.TFTP.MaxBlockSize)
	srv.SetTimeout(s.cfg.TFTP.Timeout)
	srv.SetRetries(s.cfg.TFTP.Retries)
	srv.SetBackoff(func(int) time.Duration {
		return rand.N(tftpRetransmitJitter)
	})
	e.srv = srv
	return e
}

// serve runs pin/tftp on conn until ctx ends. pin/tftp's Shutdown waits for
// every transfer, and a transfer waiting for a silent client cannot be
// interrupted from outside (its socket is private to pin/tftp), so serve
// waits at most ShutdownGrace and then returns, leaving such transfers to
// time out on their own (Retries × Timeout).
func (e *tftpEngine) serve(ctx context.Context, conn net.PacketConn) error {
	done := make(chan struct{})
	go func() {
		// pin/tftp's Serve returns nil only after Shutdown; read errors
		// on the socket are reported to no one and retried.
		e.srv.Serve(conn)
		close(done)
	}()
	select {
	case <-done:
		return fmt.Errorf("boot server: tftp %s: stopped unexpectedly", conn.LocalAddr())
	case <-ctx.Done():
	}
	close(e.stop)
	shut := make(chan struct{})
	go func() {
		e.srv.Shutdown() // closes conn, waits for transfers
		close(shut)
	}()
	timer := time.NewTimer(e.s.cfg.ShutdownGrace)
	defer timer.Stop()
	select {
	case <-shut:
	case <-timer.C:
		e.s.log.Warn("tftp: transfers still waiting for silent clients, abandoning them",
			"count", e.s.activeTFTP.Load(), "grace", e.s.cfg.ShutdownGrace,
			"ends_within", time.Duration(e.s.cfg.TFTP.Retries)*(e.s.cfg.TFTP.Timeout+tftpRetransmitJitter))
	}
	return nil
}

// errReadOnly is what a write request gets.
var errReadOnly = fmt.Errorf("write requests refused: read-only boot server: %w", os.ErrPermission)

// write refuses every write request; the refusal is logged so that a node
// trying to upload over TFTP shows up in the log.
func (e *tftpEngine) write(filename string, wt io.WriterTo) error {
	client := ""
	if it, ok := wt.(tftp.IncomingTransfer); ok {
		addr := it.RemoteAddr()
		client = addr.IP.String()
	}
	e.s.log.Warn("tftp write refused", "client", client, "file", filename)
	return errReadOnly
}

// read serves one read request. pin/tftp calls it in its own goroutine per
// transfer. The error it returns is sent to the client, so it says only
// "file not found" or "invalid file name"; the log gets the details.
func (e *tftpEngine) read(filename string, rf io.ReaderFrom) error {
	start := time.Now()
	e.s.activeTFTP.Add(1)
	defer e.s.activeTFTP.Add(-1)

	var clientIP net.IP
	ot, _ := rf.(tftp.OutgoingTransfer)
	if ot != nil {
		addr := ot.RemoteAddr()
		clientIP = addr.IP
	}
	log := e.s.log.With("proto", "tftp", "client", clientIP.String(), "file", filename)

	c, err := e.s.open(filename, clientIP)
	if err != nil {
		// Misses are routine (pxelinux walks its config names until one
		// exists); a name that tries to leave the root is not.
		if errors.Is(err, errBadName) {
			log.Warn("transfer refused", "err", err)
			return errBadName
		}
		log.Debug("transfer refused", "err", err)
		return errNotFound
	}
	defer c.Close()
	if c.node != "" {
		log = log.With("node", c.node)
	}
	if ot != nil {
		ot.SetSize(c.size)
	}
	n, err := rf.ReadFrom(&stopReader{r: c.reader(), stop: e.stop})
	if err != nil {
		// pin/tftp has already sent the client an error packet.
		log.Warn("transfer failed", "bytes", n, "size", c.size, "duration", time.Since(start).Round(time.Millisecond), "err", err)
		return nil
	}
	log.Info("transfer done", "bytes", n, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// errShuttingDown aborts transfers when the server stops.
var errShuttingDown = errors.New("boot server shutting down")

// stopReader fails reads once stop is closed, so that pin/tftp aborts a
// transfer (and tells its client) at the next block.
type stopReader struct {
	r    io.Reader
	stop <-chan struct{}
}

func (r *stopReader) Read(p []byte) (int, error) {
	select {
	case <-r.stop:
		return 0, errShuttingDown
	default:
	}
	return r.r.Read(p)
}

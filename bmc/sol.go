package bmc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	ipmi "github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/transport"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/labctl/labctl/sol"
)

// solBufferLimit bounds console output read from the BMC but not yet by the
// caller. Past it the stream stops reading from the BMC, which then buffers or,
// in the end, drops output and reports an overrun (ending the stream).
const solBufferLimit = 1 << 20

// OpenSOL opens the node's serial console: a lanplus session of its own,
// the SOL payload activated with encryption and authentication, and
// go-ipmi's SOLStream moving the bytes. A payload left active by another
// session (a crashed console, another user) is deactivated and activation
// retried, as "ipmitool sol deactivate" would; so opening a second stream
// takes the console from the first.
//
// ctx bounds the opening only. The stream lives until Close, or until it
// ends by itself: then Read (after the buffered output) and Write return an
// error wrapping the cause (the BMC deactivated the payload, output was
// lost, the BMC stopped answering) and sol.ErrClosedByBMC, as a console
// client's stream does. Close deactivates the payload and closes the
// session, once; Client.Close closes open streams; after either, Read and
// Write return an error wrapping sol.ErrClosed.
func (c *Client) OpenSOL(ctx context.Context) (io.ReadWriteCloser, error) {
	const op = "sol open"
	if c.base.Err() != nil {
		return nil, fmt.Errorf("bmc %s: %s: %w", c.addr, op, net.ErrClosed)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.base, cancel)()

	start := time.Now()
	// go-ipmi retries each exchange itself here: SOL packets must survive a
	// lost datagram without ending the stream.
	sess, err := c.dial(ctx, c.cfg.Retries)
	if err != nil {
		return nil, c.solError(ctx, op, "connect", start, err)
	}
	fail := func(step string, err error) (io.ReadWriteCloser, error) {
		err = c.solError(ctx, op, step, start, err)
		cctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
		defer cancel()
		_ = sess.close(cctx)
		return nil, err
	}

	res, err := activateSOL(ctx, sess.c)
	if cc, ok := completionCode(err); ok && cc == types.CodeActivatePayloadAlreadyActive {
		c.log.Info("SOL payload already active on another session; deactivating it and retrying")
		if err := deactivateSOL(ctx, sess.c); err != nil {
			return fail("deactivate stale payload", err)
		}
		res, err = activateSOL(ctx, sess.c)
	}
	if err != nil {
		return fail("activate payload", err)
	}
	if res.PayloadUDPPort != 0 && int(res.PayloadUDPPort) != c.cfg.Port {
		c.log.Warn("BMC asks for SOL on another UDP port; staying on the session's port",
			"payload_port", res.PayloadUDPPort)
	}

	s := &solStream{c: c, sess: sess, done: make(chan struct{}), opened: time.Now()}
	s.cond = sync.NewCond(&s.mu)
	s.inR, s.inW = io.Pipe()
	streamCtx, streamCancel := context.WithCancel(context.Background())
	s.cancel = streamCancel

	c.mu.Lock()
	if c.base.Err() != nil {
		c.mu.Unlock()
		streamCancel()
		dctx, dcancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
		_ = deactivateSOL(dctx, sess.c)
		dcancel()
		return fail("register stream", net.ErrClosed)
	}
	c.streams[s] = struct{}{}
	c.mu.Unlock()

	go s.run(streamCtx)
	c.log.Debug("SOL open", "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

func activateSOL(ctx context.Context, ic *ipmi.Client) (res *transport.ActivatePayloadResponse, err error) {
	err = guard("activate payload", func() (err error) {
		res, err = ic.ActivatePayload(ctx, &transport.ActivatePayloadRequest{
			PayloadType:          types.PayloadTypeSOL,
			PayloadInstance:      1,
			EnableEncryption:     true,
			EnableAuthentication: true,
		})
		return err
	})
	return res, err
}

// deactivateSOL deactivates SOL instance 1; "already deactivated" is fine.
func deactivateSOL(ctx context.Context, ic *ipmi.Client) error {
	err := guard("deactivate payload", func() error {
		_, err := ic.DeactivatePayload(ctx, &transport.DeactivatePayloadRequest{
			PayloadType:     types.PayloadTypeSOL,
			PayloadInstance: 1,
		})
		return err
	})
	if cc, ok := completionCode(err); ok && cc == types.CodeDeactivatePayloadAlreadyDeactivated {
		return nil
	}
	return err
}

// solError words a failure to open a SOL stream like call's errors. go-ipmi
// made Retries+1 attempts of the exchange that failed.
func (c *Client) solError(ctx context.Context, op, step string, start time.Time, err error) error {
	if c.base.Err() != nil {
		return fmt.Errorf("bmc %s: %s: %w", c.addr, op, net.ErrClosed)
	}
	if ctxDone(ctx) {
		return c.gaveUp(ctx, op, step, 0, start, nil, err)
	}
	switch kind := classify(err); kind {
	case kindAuth:
		return c.permanentError(op, step, kind, err)
	case kindNoAnswer:
		return fmt.Errorf("bmc %s: %s: no answer after %s in %s: %w",
			c.addr, op, triesString(c.cfg.Retries+1), since(start), stepErr(step, err))
	}
	return fmt.Errorf("bmc %s: %s: %w", c.addr, op, stepErr(step, err))
}

// solStream is the io.ReadWriteCloser OpenSOL returns. Output from the BMC
// collects in buf until Read takes it; Write feeds the stream's input pipe.
type solStream struct {
	c      *Client
	sess   *session
	cancel context.CancelFunc
	inR    *io.PipeReader
	inW    *io.PipeWriter
	done   chan struct{} // closed when SOLStream has returned

	mu   sync.Mutex
	cond *sync.Cond // signals buf and err changes
	buf  []byte
	err  error // why the stream is over; nil while it runs

	closeOnce sync.Once
	closeErr  error

	// cmdMu serialises IPMI commands on the SOL session (keepalive,
	// Check): go-ipmi's IPMI sequence numbers are not safe for two at once.
	cmdMu sync.Mutex
	// answered is when the BMC last answered a SOL exchange, as time.Since
	// opened; 0: never.
	opened   time.Time
	answered atomic.Int64
}

func (s *solStream) run(ctx context.Context) {
	defer close(s.done)
	kctx, stopKeepalive := context.WithCancel(ctx)
	defer stopKeepalive()
	go s.keepalive(kctx)
	err := guard("sol", func() error {
		return s.sess.c.SOLStream(ctx, s.inR, solOutput{s}, &ipmi.SOLStreamOptions{
			PollInterval: s.c.t.solPoll, IdlePollInterval: s.c.t.solIdlePoll,
			Answered: func() { s.answered.Store(int64(time.Since(s.opened))) },
		})
	})
	switch {
	case err == nil:
		err = errors.New("input ended") // only when the input pipe is closed
	case classify(err) == kindNoAnswer:
		// go-ipmi drops the BMC's deactivation notice when it comes as an
		// ACK-only packet; the payload is then simply gone.
		err = fmt.Errorf("the BMC stopped answering SOL packets (payload deactivated, or BMC gone): %w", err)
	}
	s.end(fmt.Errorf("bmc %s: sol: %w: %w", s.c.addr, err, sol.ErrClosedByBMC))
}

// keepalive sends Get Device ID on the SOL session now and then, as
// ipmitool does: BMCs (ipmi_sim among them) time a session out on IPMI
// commands, and SOL packets do not count. SOL packets are matched by their SOL sequence, not the IPMI
// sequence, so the command may run beside the stream.
func (s *solStream) keepalive(ctx context.Context) {
	t := time.NewTicker(s.c.t.keepalive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, s.c.cfg.Timeout*time.Duration(s.c.cfg.Retries+1))
		s.cmdMu.Lock()
		err := guard("sol keepalive", func() error {
			_, err := s.sess.c.GetDeviceID(cctx)
			return err
		})
		s.cmdMu.Unlock()
		if err != nil && ctx.Err() == nil {
			s.c.log.Debug("SOL session keepalive failed", "err", err)
		}
		cancel()
	}
}

// Check says whether the stream still works: the BMC answered one of its
// SOL exchanges within the last solVouch, or it says now that the SOL
// payload is active on the stream's session, not ended or taken by
// another client (Get Payload Instance Info names the payload's session).
// A session kept open across a BMC outage, or one the BMC dropped without
// a word, fails it. A BMC without the command answers
// errors.ErrUnsupported: the caller cannot tell.
func (s *solStream) Check(ctx context.Context) error {
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if at := s.answered.Load(); at > 0 && time.Since(s.opened)-time.Duration(at) < s.c.t.solVouch {
		return nil
	}
	s.cmdMu.Lock()
	var res *transport.GetPayloadInstanceInfoResponse
	err = guard("sol check", func() (err error) {
		res, err = s.sess.c.GetPayloadInstanceInfo(ctx, types.PayloadTypeSOL, 1)
		return err
	})
	s.cmdMu.Unlock()
	if cc, ok := completionCode(err); ok && cc == types.CodeInvalidCommand {
		return fmt.Errorf("bmc %s: sol check: the BMC has no Get Payload Instance Info: %w", s.c.addr, errors.ErrUnsupported)
	}
	switch {
	case err != nil:
		return fmt.Errorf("bmc %s: sol check: %w", s.c.addr, err)
	case res.SessionID != s.sess.c.SessionID():
		return fmt.Errorf("bmc %s: sol check: the SOL payload is active on BMC session 0x%08x, not this stream's 0x%08x", s.c.addr, res.SessionID, s.sess.c.SessionID())
	}
	return nil
}

// end records why the stream is over (the first reason wins) and wakes
// everyone waiting on it.
func (s *solStream) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	// Writes fail from now on, before Read can report the end.
	_ = s.inR.CloseWithError(err)
	s.err = err
	s.cond.Broadcast()
	if !errors.Is(err, sol.ErrClosed) {
		s.c.log.Info("SOL stream ended", "err", err)
	}
}

// Read returns console output; once the stream is over and the output is
// drained, the error that ended it (see OpenSOL).
func (s *solStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.buf) == 0 && s.err == nil {
		s.cond.Wait()
	}
	if len(s.buf) > 0 {
		n := copy(p, s.buf)
		s.buf = s.buf[n:]
		if len(s.buf) == 0 {
			s.buf = nil
		}
		s.cond.Broadcast() // room for the stream's writer
		return n, nil
	}
	return 0, s.err
}

// Write sends p to the console. It returns once the stream has taken the
// bytes, which it then sends one per SOL packet.
func (s *solStream) Write(p []byte) (int, error) {
	return s.inW.Write(p)
}

// Close stops the stream, deactivates the payload and closes the session.
// It returns an error when the deactivation failed, unless the stream had
// already ended with sol.ErrClosedByBMC. It is idempotent.
func (s *solStream) Close() error {
	s.closeOnce.Do(func() {
		s.end(fmt.Errorf("bmc %s: sol: %w", s.c.addr, sol.ErrClosed))
		s.cancel()
		<-s.done

		s.mu.Lock()
		byBMC := errors.Is(s.err, sol.ErrClosedByBMC)
		s.mu.Unlock()
		timeout := s.c.cfg.Timeout
		ctx, cancel := context.WithTimeout(context.Background(), 2*timeout)
		err := deactivateSOL(ctx, s.sess.c)
		cancel()
		switch {
		case err != nil && byBMC:
			// The BMC ended the payload (or stopped answering) before:
			// there is nothing of ours to release, and no answer now is
			// no news.
			s.c.log.Debug("SOL close: deactivate after the BMC ended the payload", "err", err)
		case err != nil:
			s.closeErr = fmt.Errorf("bmc %s: sol close: deactivate payload: %w", s.c.addr, err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), timeout)
		if err := s.sess.close(ctx); err != nil {
			s.c.log.Debug("SOL close session", "err", err)
		}
		cancel()

		s.c.mu.Lock()
		delete(s.c.streams, s)
		s.c.mu.Unlock()
	})
	return s.closeErr
}

// solOutput is the writer SOLStream delivers console output to.
type solOutput struct{ s *solStream }

func (o solOutput) Write(p []byte) (int, error) {
	s := o.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.buf) >= solBufferLimit && s.err == nil {
		s.cond.Wait()
	}
	if s.err != nil {
		return 0, s.err
	}
	s.buf = append(s.buf, p...)
	s.cond.Broadcast()
	return len(p), nil
}

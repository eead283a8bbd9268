package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	ipmi "github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
)

// session is one go-ipmi lanplus client with its session open. go-ipmi's
// Close panics when called twice, so close goes through a sync.Once.
type session struct {
	c         *ipmi.Client
	closeOnce sync.Once
	closeErr  error
}

func (s *session) close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.c.Close(ctx) })
	return s.closeErr
}

// abandon releases the socket without talking to the BMC (a cancelled
// context makes go-ipmi skip Close Session); the BMC expires the session.
func (s *session) abandon() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.close(ctx)
}

// dial opens a lanplus session. retries is go-ipmi's own per-exchange retry
// count: 0 for the command session (this package retries whole commands, so
// that each try is built afresh), more for SOL streams, whose packets are
// resent as they are.
//
// It does what go-ipmi's Connect does except two things. Connect starts a
// keepalive goroutine that sends commands on the session behind its owner's
// back: go-ipmi's sequence numbers are not safe for that, and a keepalive
// exchange starting as the client closes dereferences a nil socket (panic).
// The command session has an owner-serialised keepalive instead (see
// keepalive); SOL streams have one of their own (solStream.keepalive). And Connect first
// sends Get Channel Authentication Capabilities, which RMCP+ does not need.
func (c *Client) dial(ctx context.Context, retries int) (*session, error) {
	cfg := c.cfg
	if cfg.Host == "" {
		return nil, permanent(errors.New("no BMC host configured"))
	}
	if cfg.CipherSuite < 0 || cfg.CipherSuite > 19 {
		return nil, permanent(fmt.Errorf("cipher suite %d does not exist (0 negotiates, 1..19)", cfg.CipherSuite))
	}
	ic, err := ipmi.NewClient(cfg.Host, cfg.Port, cfg.User, cfg.Password)
	if err != nil {
		return nil, permanent(err)
	}
	ic.WithInterface(ipmi.InterfaceLanplus).WithTimeout(cfg.Timeout).WithRetry(retries).
		WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator)
	s := &session{c: ic}

	start := time.Now()
	suites := []types.CipherSuiteID{types.CipherSuiteID(cfg.CipherSuite)}
	if cfg.CipherSuite == 0 {
		suites = c.cipherSuites(ctx, ic)
	}
	var errs []error
	var suite types.CipherSuiteID
	for _, id := range suites {
		err := openSession(ctx, ic, id)
		if err == nil {
			suite = id
			errs = nil
			break
		}
		errs = append(errs, fmt.Errorf("cipher suite %d: %w", id, err))
		// Other suites won't help a BMC that is silent or rejects the user.
		if k := classify(err); ctxDone(ctx) || k == kindNoAnswer || k == kindAuth {
			break
		}
	}
	if errs == nil {
		err = guard("set session privilege level", func() error {
			_, err := ic.SetSessionPrivilegeLevel(ctx, types.PrivilegeLevelAdministrator)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("set session privilege level administrator: %w", err))
		}
	}
	if len(errs) > 0 {
		s.abandon()
		return nil, errors.Join(errs...)
	}
	c.log.Debug("session open", "cipher_suite", int(suite), "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

// cipherSuites asks the BMC for its cipher suites, strongest first, and
// falls back to go-ipmi's preference list (17, 3, ...) when it does not say.
// ipmi_sim does not answer the question in RMCP+ framing: that costs one
// Timeout, and suite 17 (no SHA-256 there) is then refused at once.
func (c *Client) cipherSuites(ctx context.Context, ic *ipmi.Client) []types.CipherSuiteID {
	start := time.Now()
	var recs []types.CipherSuiteRecord
	err := guard("get channel cipher suites", func() (err error) {
		recs, err = ic.GetAllChannelCipherSuites(ctx, types.ChannelNumberSelf)
		return err
	})
	var ids []types.CipherSuiteID
	for _, r := range recs {
		ids = append(ids, r.CipherSuitID)
	}
	ids = types.SortCipherSuites(ids)
	if err != nil || len(ids) == 0 {
		c.log.Debug("BMC does not list its cipher suites; trying the preferred ones",
			"took", time.Since(start).Round(time.Millisecond), "err", err)
		return types.PreferredCiphers
	}
	return ids
}

// openSession runs the RMCP+ session setup (Open Session, RAKP 1-4) with
// one cipher suite.
func openSession(ctx context.Context, ic *ipmi.Client, id types.CipherSuiteID) error {
	return guard("session setup", func() error { return setUpSession(ctx, ic, id) })
}

func setUpSession(ctx context.Context, ic *ipmi.Client, id types.CipherSuiteID) error {
	ic.WithCipherSuiteID(id)
	if _, err := ic.OpenSession(ctx); err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	if _, err := ic.RAKPMessage1(ctx); err != nil {
		return fmt.Errorf("RAKP 1: %w", err)
	}
	if _, err := ic.RAKPMessage3(ctx); err != nil {
		return fmt.Errorf("RAKP 3: %w", err)
	}
	return nil
}

// keepalive keeps the idle command session from expiring on the BMC (most
// drop sessions idle for 60s): every keepalive interval, if nobody else owns
// the session and it has been idle for half that, it asks for the session's
// info, as one owner-serialised command. It ends with Close.
func (c *Client) keepalive() {
	defer c.keepaliveDone.Done()
	t := time.NewTicker(c.t.keepalive)
	defer t.Stop()
	for {
		select {
		case <-c.base.Done():
			return
		case <-t.C:
		}
		select {
		case c.owner <- struct{}{}:
		default:
			continue // in use, so alive
		}
		if c.base.Err() == nil && c.sess != nil && time.Since(c.lastUsed) >= c.t.keepalive/2 {
			ctx, cancel := context.WithTimeout(c.base, c.cfg.Timeout)
			err := c.try(ctx, func(ctx context.Context, ic *ipmi.Client) error {
				_, err := ic.GetCurrentSessionInfo(ctx)
				return err
			})
			cancel()
			if err != nil {
				c.log.Debug("keepalive", "err", err)
			}
		}
		<-c.owner
	}
}

// call runs one IPMI step of operation op on the command session, opening
// the session first when there is none. Transient failures are retried with
// a capped backoff; the caller must own the session (see own).
func (c *Client) call(ctx context.Context, op, step string, fn func(context.Context, *ipmi.Client) error) (err error) {
	start := time.Now()
	if c.cfg.Observe != nil {
		defer func() { c.cfg.Observe(op, time.Since(start), err) }()
	}
	var last error
	tries := 0
	for {
		tries++
		err := c.try(ctx, fn)
		if err == nil {
			return nil
		}
		if ctxDone(ctx) {
			return c.gaveUp(ctx, op, step, tries, start, last, err)
		}
		last = err
		kind := classify(err)
		if kind == kindPermanent || kind == kindAuth {
			return c.permanentError(op, step, kind, err)
		}
		if tries > c.cfg.Retries {
			return c.exhausted(op, step, tries, start, err)
		}
		wait := c.backoff(tries)
		c.log.Debug("retrying", "op", op, "step", step, "try", tries, "wait", wait, "err", stepErr(step, err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return c.gaveUp(ctx, op, step, tries, start, last, nil)
		case <-t.C:
		}
	}
}

// try makes one attempt: connect if needed, then fn. It drops the session
// when it looks broken, so that the next try reconnects.
func (c *Client) try(ctx context.Context, fn func(context.Context, *ipmi.Client) error) error {
	if c.sess == nil {
		s, err := c.dial(ctx, 0)
		if err != nil {
			return &connectError{err}
		}
		c.sess = s
		c.timeouts = 0
		c.lastUsed = time.Now()
		c.keepaliveOnce.Do(func() {
			c.keepaliveDone.Add(1)
			go c.keepalive()
		})
	}
	sc := c.sess.c
	err := guard("ipmi", func() error { return fn(ctx, sc) })
	switch {
	case err == nil:
		c.timeouts = 0
		c.lastUsed = time.Now()
	case ctx.Err() != nil:
		// The exchange may still be in flight inside go-ipmi; the session
		// itself is fine.
	case classify(err) == kindNoAnswer:
		// One lost packet is no reason to give up a session (BMCs have few),
		// two unanswered tries in a row are: the BMC may have restarted and
		// forgotten it.
		c.timeouts++
		if c.timeouts >= 2 {
			c.dropSession("no answer twice in a row")
		}
	case classify(err) == kindOther:
		c.dropSession(err.Error())
	}
	return err
}

func (c *Client) dropSession(why string) {
	if c.sess == nil {
		return
	}
	c.log.Info("dropping IPMI session; the next command reconnects", "why", why)
	// Don't wait for a BMC that does not answer; it expires the session.
	c.sess.abandon()
	c.sess = nil
	c.timeouts = 0
}

// backoff is the wait after the tries-th failed try: doubling, capped.
func (c *Client) backoff(tries int) time.Duration {
	d := c.t.backoffBase
	for i := 1; i < tries && d < c.t.backoffCap; i++ {
		d *= 2
	}
	return min(d, c.t.backoffCap)
}

// connectError marks a failure to open the session.
type connectError struct{ err error }

func (e *connectError) Error() string { return "connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// permanentError marks failures that retrying cannot fix (configuration).
type permanentErr struct{ err error }

func (e *permanentErr) Error() string { return e.err.Error() }
func (e *permanentErr) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentErr{err} }

type errKind int

const (
	kindNoAnswer  errKind = iota // timeout, no matching response, port unreachable
	kindBusy                     // the BMC answered "busy, try again"
	kindAuth                     // user, password or privilege rejected
	kindPermanent                // the BMC refused the command, or bad configuration
	kindOther                    // garbled exchange: retry on a new session
)

// rmcpStatus finds an RMCP+ status code in err. go-ipmi's Connect flattens
// the errors of the cipher suites it tried into text, so look there too.
func rmcpStatus(err error) (types.RmcpStatusCode, bool) {
	var st *types.RmcpStatusError
	if errors.As(err, &st) {
		return st.StatusCode(), true
	}
	m := rmcpStatusText.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, false
	}
	code, perr := strconv.ParseUint(m[1], 16, 8)
	if perr != nil {
		return 0, false
	}
	return types.RmcpStatusCode(code), true
}

var rmcpStatusText = regexp.MustCompile(`RMCP\+ status 0x([0-9a-fA-F]{1,2})\b`)

// classify sorts go-ipmi errors into what the retry loop does with them.
func classify(err error) errKind {
	var perm *permanentErr
	if errors.As(err, &perm) {
		return kindPermanent
	}
	msg := err.Error()
	if errors.Is(err, ipmi.ErrRAKPAuthentication) || strings.Contains(msg, ipmi.ErrRAKPAuthentication.Error()) {
		return kindAuth
	}
	if code, ok := rmcpStatus(err); ok {
		switch code {
		case types.RmcpStatusCodeNoResToCreateSess, types.RmcpStatusCodeNoResToCreateSessAtRole:
			return kindBusy // out of session slots: they free up
		case types.RmcpStatusCodeUnauthorizedName, types.RmcpStatusCodeInvalidRole,
			types.RmcpStatusCodeUnauthorizedRoleOfPriLevel, types.RmcpStatusCodeInvalidNameLength,
			types.RmcpStatusCodeInvalidIntegrityCheckValue:
			return kindAuth
		}
		return kindPermanent // e.g. the BMC does not offer the cipher suite
	}
	if cc, ok := completionCode(err); ok {
		switch cc {
		case types.CodeNodeBusy, types.CodeProcessTimeout, types.CodeCannotProvideResponseBMCInitialize:
			return kindBusy
		}
		var ce *connectError
		if errors.As(err, &ce) && cc == types.CodeInsufficientPrivilege {
			return kindAuth
		}
		return kindPermanent
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return kindNoAnswer
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return kindNoAnswer
	}
	// go-ipmi's "no datagram matched before deadline" is unexported, and
	// Connect flattens errors into text.
	for _, s := range []string{"no datagram matched", "i/o timeout", "connection refused", "no route to host", "network is unreachable"} {
		if strings.Contains(msg, s) {
			return kindNoAnswer
		}
	}
	return kindOther
}

func completionCode(err error) (types.CompletionCode, bool) {
	var re *types.ResponseError
	if errors.As(err, &re) {
		return re.CompletionCode(), true
	}
	return 0, false
}

// stepErr prefixes err with the step that failed, on one line.
func stepErr(step string, err error) error {
	var ce *connectError
	if !errors.As(err, &ce) {
		err = fmt.Errorf("%s: %w", step, err) // "connect: ..." already says it
	}
	return oneLineErr{err}
}

// oneLineErr keeps go-ipmi's multi-line errors (Connect joins those of the
// cipher suites it tried with newlines) on one line.
type oneLineErr struct{ err error }

func (e oneLineErr) Error() string {
	return strings.Join(strings.Fields(e.err.Error()), " ")
}
func (e oneLineErr) Unwrap() error { return e.err }

func (c *Client) exhausted(op, step string, tries int, start time.Time, err error) error {
	what := "no answer"
	if classify(err) != kindNoAnswer {
		what = "failed"
	}
	return fmt.Errorf("bmc %s: %s: %s after %s in %s: %w",
		c.addr, op, what, triesString(tries), since(start), stepErr(step, err))
}

// gaveUp reports a call stopped by its context (or by Close). cause is the
// error of the try that the context interrupted, last the one before it.
func (c *Client) gaveUp(ctx context.Context, op, step string, tries int, start time.Time, last, cause error) error {
	if c.base.Err() != nil {
		return fmt.Errorf("bmc %s: %s: %w", c.addr, op, net.ErrClosed)
	}
	// The interrupted try's own error is news only if the BMC answered it:
	// a try cut short by the deadline reads as "no answer".
	if last == nil && cause != nil && !errors.Is(cause, context.Canceled) &&
		!errors.Is(cause, context.DeadlineExceeded) && classify(cause) != kindNoAnswer {
		last = cause
	}
	e := &interruptedError{ctxErr: ctxCause(ctx)}
	after := "after " + triesString(tries) + " "
	if tries == 0 {
		after = "" // go-ipmi retried inside; the count is unknown
	}
	if last == nil {
		e.msg = fmt.Sprintf("bmc %s: %s: no answer %sin %s: %v",
			c.addr, op, after, since(start), e.ctxErr)
		return e
	}
	e.last = stepErr(step, last)
	what := "no answer"
	if classify(last) != kindNoAnswer {
		what = "no success"
	}
	e.msg = fmt.Sprintf("bmc %s: %s: %s %sin %s: %v (last error: %v)",
		c.addr, op, what, after, since(start), e.ctxErr, e.last)
	return e
}

// interruptedError is a call that its context ended; last is the error of
// the last failed try, if any.
type interruptedError struct {
	msg    string
	ctxErr error
	last   error
}

func (e *interruptedError) Error() string { return e.msg }
func (e *interruptedError) Unwrap() []error {
	if e.last == nil {
		return []error{e.ctxErr}
	}
	return []error{e.ctxErr, e.last}
}

func (c *Client) permanentError(op, step string, kind errKind, err error) error {
	if kind == kindAuth {
		return fmt.Errorf("bmc %s: %s: authentication as user %q failed (wrong user, password or privilege?), not retried: %w",
			c.addr, op, c.cfg.User, stepErr(step, err))
	}
	return fmt.Errorf("bmc %s: %s: %w", c.addr, op, stepErr(step, err))
}

func since(start time.Time) string {
	d := time.Since(start)
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func triesString(n int) string {
	if n == 1 {
		return "1 try"
	}
	return fmt.Sprintf("%d tries", n)
}

// ctxDone reports whether ctx has ended or its deadline has passed (go-ipmi
// can return at the deadline a moment before ctx reports it).
func ctxDone(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// ctxCause is why ctx ended, also in the moment ctxDone sees it before ctx.
func ctxCause(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return context.DeadlineExceeded
}

// guard runs fn, one or more go-ipmi exchanges, and turns a panic inside
// go-ipmi into an error: its packet parsing does not check every length
// (a short or mis-padded encrypted payload indexes out of range), and one
// malformed or misrouted BMC packet must fail one exchange, not the
// daemon. The error is transient: the session is dropped and the command
// tried again on a new one.
func guard(what string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: malformed packet from the BMC (go-ipmi: %v)", what, r)
		}
	}()
	return fn()
}

// Package bmc drives a node's baseboard management controller over IPMI
// lanplus (RMCP+): power on/off/cycle/reset and the next-boot device, each
// confirmed by reading the state back, plus native Serial-over-LAN console
// streams.
//
// One Client owns one BMC. Its commands are serialised and share one
// long-lived session that is opened on first use and reopened after a
// session failure; transient failures (no answer, "no matching response",
// a busy BMC) are retried with a capped backoff, authentication failures are
// not. Each SOL stream has a session of its own.
//
// A SOL payload ended at the BMC may show only as SOL packets going
// unanswered: the stream then ends after Timeout x (Retries+1). Timings
// against the simulated lab's ipmi_sim are in bench/RESULTS.md.
//
// This is the only package that imports github.com/bougou/go-ipmi.
package bmc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultPort    = 623
	DefaultTimeout = time.Second // per attempt, as ipmitool's lanplus
	DefaultRetries = 3           // 4 tries in all
)

// timing holds the waits of a Client; tests shorten them.
type timing struct {
	backoffBase time.Duration // first wait between tries
	backoffCap  time.Duration // longest wait between tries
	poll        time.Duration // power state read-back
	confirm     time.Duration // read-back limit when ctx has no deadline
	cycleSettle time.Duration // cycle: "on" this long without an "off" counts as done
	solPoll     time.Duration // empty SOL packets asking for output, while it flows (where the stream cannot wait for the BMC)
	solIdlePoll time.Duration // the same, on a quiet console
	keepalive   time.Duration // idle command session, and the SOL session
	solVouch    time.Duration // a SOL exchange answered this recently vouches for the stream (Check)
}

func defaultTiming() timing {
	return timing{
		backoffBase: 200 * time.Millisecond,
		backoffCap:  2 * time.Second,
		poll:        200 * time.Millisecond,
		confirm:     30 * time.Second,
		cycleSettle: 3 * time.Second,
		// A stream reads console output as soon as the BMC sends it (it
		// sends it unasked, as ipmitool, which never polls, relies on)
		// and polls only to see the session is alive, every solIdlePoll;
		// where the stream cannot wait for the BMC's datagrams it polls
		// every solPoll while output or input flows, backing off to
		// solIdlePoll on a quiet console, whose polls would otherwise cost
		// the daemon (and the BMCs) a packet exchange each per console.
		solPoll:     20 * time.Millisecond,
		solIdlePoll: 5 * time.Second,
		keepalive:   15 * time.Second,
		// The BMC answered the stream's SOL packet this recently: its
		// payload was active on the stream's session then, so Check need
		// not ask. A payload lost since ends the stream at its next
		// exchange, and the console's session reconnects.
		solVouch: 2 * time.Second,
	}
}

// Config says how to reach one BMC.
type Config struct {
	Host string
	Port int // 623 if zero
	User string
	// Password is held in memory only: it never appears in errors, logs or
	// String() output.
	Password string
	// CipherSuite is the RMCP+ cipher suite ID (1..19). 0 negotiates: the
	// BMC's suites are asked for and tried strongest first, which costs an
	// extra round trip, or one Timeout against ipmi_sim; 3 is what ipmi_sim
	// and most older BMCs want.
	CipherSuite int
	// Timeout bounds one attempt of one IPMI exchange (default 1s).
	Timeout time.Duration
	// Retries is how many more tries a command gets after a transient
	// failure: 0 means the default (3), a negative value means none.
	Retries int
	// Observe, if set, hears each IPMI request once it is done: its
	// operation ("power on", "bootdev pxe", ...), how long it took with
	// its retries, and its error. It is for metrics and must not block.
	Observe Observer
}

// Observer hears a BMC request once it is done (Config.Observe).
type Observer func(op string, took time.Duration, err error)

// String describes the BMC without the password.
func (c Config) String() string {
	return fmt.Sprintf("bmc %s user=%q cipher_suite=%d", c.addr(), c.User, c.CipherSuite)
}

// GoString keeps %#v from printing the password.
func (c Config) GoString() string { return "bmc.Config{" + c.String() + "}" }

// LogValue keeps slog from printing the password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("addr", c.addr()),
		slog.String("user", c.User),
		slog.Int("cipher_suite", c.CipherSuite),
	)
}

func (c Config) addr() string {
	port := c.Port
	if port == 0 {
		port = DefaultPort
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port))
}

func (c Config) withDefaults() Config {
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries < 0:
		c.Retries = 0
	}
	return c
}

// PowerOp is a chassis power action.
type PowerOp int

// Power actions.
const (
	PowerOn PowerOp = iota + 1
	PowerOff
	// PowerCycle turns the node off and on again. A node that is off is
	// just powered on (BMCs refuse a cycle then, completion code D5h).
	PowerCycle
	// PowerReset is a hard reset: power stays on. A node that is off is
	// powered on instead.
	PowerReset
)

func (op PowerOp) String() string {
	switch op {
	case PowerOn:
		return "power on"
	case PowerOff:
		return "power off"
	case PowerCycle:
		return "power cycle"
	case PowerReset:
		return "power reset"
	}
	return fmt.Sprintf("power op %d", int(op))
}

// BootDevice is the device the node boots from next.
type BootDevice int

// Boot devices.
const (
	// BootNone means no override: the BMC reports no valid boot flags.
	BootNone BootDevice = iota
	BootPXE
	BootDisk
	// BootOther is an override this package does not set (CD-ROM, BIOS
	// setup, ...); it is only ever read back.
	BootOther
)

func (d BootDevice) String() string {
	switch d {
	case BootNone:
		return "none"
	case BootPXE:
		return "pxe"
	case BootDisk:
		return "disk"
	case BootOther:
		return "other"
	}
	return fmt.Sprintf("boot device %d", int(d))
}

// BootOptions are the flags sent with a boot device.
type BootOptions struct {
	EFI        bool // EFI boot instead of legacy BIOS (ipmitool options=efiboot)
	Persistent bool // all future boots, not only the next one (options=persistent)
}

// Client owns one BMC: it serialises commands over one long-lived lanplus
// session and opens SOL streams. It is safe for concurrent use.
type Client struct {
	cfg  Config
	addr string
	log  *slog.Logger
	t    timing

	// base ends when Close is called; every operation stops with it.
	base   context.Context
	cancel context.CancelFunc

	// owner is a one-slot semaphore: whoever holds it drives the command
	// session. A channel rather than a mutex so that waiting honours ctx.
	owner chan struct{}
	// Guarded by owner.
	sess     *session
	timeouts int       // consecutive unanswered tries on sess
	lastUsed time.Time // last successful exchange on sess

	keepaliveOnce sync.Once
	keepaliveDone sync.WaitGroup

	mu        sync.Mutex
	streams   map[*solStream]struct{} // open SOL streams, closed with the client
	closeOnce sync.Once
	closeErr  error
}

// New returns a client for the BMC in cfg. It does not connect: the session
// is opened by the first command. log may be nil.
func New(cfg Config, log *slog.Logger) *Client {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:     cfg,
		addr:    cfg.addr(),
		base:    base,
		cancel:  cancel,
		t:       defaultTiming(),
		owner:   make(chan struct{}, 1),
		streams: make(map[*solStream]struct{}),
	}
	c.log = log.With("bmc", c.addr)
	return c
}

// Close ends open SOL streams, closes the command session and makes every
// later call fail. It is idempotent; calls in progress are cancelled.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()

		c.mu.Lock()
		streams := make([]*solStream, 0, len(c.streams))
		for s := range c.streams {
			streams = append(streams, s)
		}
		c.mu.Unlock()
		var errs []error
		for _, s := range streams {
			errs = append(errs, s.Close())
		}

		// In-flight commands return at once on cancellation, so this wait
		// is short.
		c.owner <- struct{}{}
		if c.sess != nil {
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
			if err := c.sess.close(ctx); err != nil {
				c.log.Debug("close session", "err", err)
			}
			cancel()
			c.sess = nil
		}
		<-c.owner
		c.keepaliveDone.Wait()
		if err := errors.Join(errs...); err != nil {
			c.closeErr = fmt.Errorf("bmc %s: close: %w", c.addr, err)
		}
	})
	return c.closeErr
}

// own makes the caller the owner of the command session until release is
// called. The returned context ends with ctx or with Close.
func (c *Client) own(ctx context.Context, op string) (context.Context, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.base, cancel)
	fail := func(err error) (context.Context, func(), error) {
		stop()
		cancel()
		return nil, nil, fmt.Errorf("bmc %s: %s: %w", c.addr, op, err)
	}
	if c.base.Err() != nil {
		return fail(net.ErrClosed)
	}
	select {
	case c.owner <- struct{}{}:
	case <-ctx.Done():
		if c.base.Err() != nil {
			return fail(net.ErrClosed)
		}
		return fail(fmt.Errorf("waiting for the BMC's other commands: %w", context.Cause(ctx)))
	}
	if c.base.Err() != nil {
		<-c.owner
		return fail(net.ErrClosed)
	}
	return ctx, func() {
		<-c.owner
		stop()
		cancel()
	}, nil
}

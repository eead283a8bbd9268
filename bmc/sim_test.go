package bmc

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/clock"
	"github.com/bougou/go-ipmi/pkg/hal"
	"github.com/bougou/go-ipmi/pkg/hal/mock"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/server"
	"github.com/bougou/go-ipmi/pkg/transport/udp"
	"github.com/bougou/go-ipmi/pkg/types"
)

// The in-process BMC of these tests is go-ipmi's reference server
// (pkg/server + pkg/bmc) on 127.0.0.1 with a fake chassis that behaves like
// simlab's ipmi_sim hook, a fake serial console, a packet filter that can
// go silent, and a recorder of the commands it handled.

const (
	simUser     = "admin"
	simPassword = "s3cret-Pa55word" // must never show up in errors or logs
)

// testTiming is shorter than the waits for real BMCs.
var testTiming = timing{
	backoffBase: 20 * time.Millisecond,
	backoffCap:  200 * time.Millisecond,
	poll:        20 * time.Millisecond,
	confirm:     5 * time.Second,
	cycleSettle: 300 * time.Millisecond,
	solPoll:     100 * time.Millisecond,
	solIdlePoll: time.Second,
	keepalive:   250 * time.Millisecond,
}

// fakeChassis is a node's power and boot flags. Power cycle behaves like
// ipmi_sim with simlab's hook: off at once, on again after cycleDelay.
type fakeChassis struct {
	mu           sync.Mutex
	on           bool
	cycleDelay   time.Duration
	ignorePower  bool                      // accept power commands, change nothing
	cycleKeepsOn bool                      // a cycle that never shows "off" between polls
	offAtCycle   bool                      // the node is off when the next cycle arrives
	readBack     string                    // "" (as stored), "invalid" (ipmi_sim), "unsupported" (80h)
	storeAs      *types.BootDeviceSelector // store this device instead of the one sent
	cycles       int
	resets       int
	flags        *types.BootOptionParam_BootFlags
	timers       []*time.Timer
}

func (c *fakeChassis) PowerState(context.Context) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on, nil
}

func (c *fakeChassis) SetPower(_ context.Context, on bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ignorePower {
		c.on = on
	}
	return nil
}

func (c *fakeChassis) PowerCycle(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.offAtCycle {
		c.on, c.offAtCycle = false, false
	}
	if !c.on {
		return hal.ErrNotSupported
	}
	c.cycles++
	if c.cycleKeepsOn {
		return nil
	}
	c.on = false
	c.timers = append(c.timers, time.AfterFunc(c.cycleDelay, func() {
		c.mu.Lock()
		c.on = true
		c.mu.Unlock()
	}))
	return nil
}

func (c *fakeChassis) ColdReset(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resets++
	return nil
}

func (c *fakeChassis) WarmReset(context.Context) error              { return nil }
func (c *fakeChassis) Identify(context.Context, uint8) error        { return nil }
func (c *fakeChassis) IntrusionState(context.Context) (bool, error) { return false, nil }
func (c *fakeChassis) SetBootInfoAcknowledge(context.Context, *types.BootOptionParam_BootInfoAcknowledge) error {
	return nil
}
func (c *fakeChassis) GetBootInfoAcknowledge(context.Context) (*types.BootOptionParam_BootInfoAcknowledge, error) {
	return &types.BootOptionParam_BootInfoAcknowledge{}, nil
}

func (c *fakeChassis) SetBootFlags(_ context.Context, f *types.BootOptionParam_BootFlags) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := *f
	if c.storeAs != nil {
		cp.BootDeviceSelector = *c.storeAs
	}
	c.flags = &cp
	return nil
}

func (c *fakeChassis) GetBootFlags(context.Context) (*types.BootOptionParam_BootFlags, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.readBack == "unsupported":
		return nil, hal.ErrNotSupported
	case c.readBack == "invalid" || c.flags == nil:
		return &types.BootOptionParam_BootFlags{}, nil
	}
	cp := *c.flags
	return &cp, nil
}

func (c *fakeChassis) state() (on bool, cycles, resets int, flags *types.BootOptionParam_BootFlags) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on, c.cycles, c.resets, c.flags
}

func (c *fakeChassis) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.timers {
		t.Stop()
	}
}

// simHAL is go-ipmi's mock HAL with our chassis.
type simHAL struct {
	*mock.HAL
	chassis *fakeChassis
}

func (h simHAL) Chassis() hal.ChassisHAL { return h.chassis }

// faultConn is the server's socket with a silence switch and counters.
type faultConn struct {
	*udp.Conn
	silent  atomic.Bool
	drop    atomic.Int64 // the next packets from clients to lose
	packets atomic.Int64 // from clients
	answers atomic.Int64 // to clients
	rakp1   atomic.Int64
	// mangle cuts the next encrypted in-session answers short: an RMCP+
	// packet whose payload is 5 bytes where an encrypted payload takes at
	// least 32 (its IV and one block).
	mangle atomic.Int64
}

func (f *faultConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	// RMCP header (4 bytes), auth type 06h, payload type with the
	// encrypted bit, session ID (4), sequence (4), payload length (2).
	if len(p) > 16+5 && p[4] == 0x06 && p[5]&0x80 != 0 && f.mangle.Load() > 0 {
		f.mangle.Add(-1)
		short := append([]byte(nil), p[:16+5]...)
		short[14], short[15] = 5, 0
		_, err := f.Conn.WriteTo(short, addr)
		return len(p), err
	}
	f.answers.Add(1)
	return f.Conn.WriteTo(p, addr)
}

func (f *faultConn) ReadFrom(buf []byte) (int, net.Addr, error) {
	for {
		n, addr, err := f.Conn.ReadFrom(buf)
		if err != nil {
			return n, addr, err
		}
		f.packets.Add(1)
		// RMCP header (4 bytes), auth type 06h (RMCP+), payload type 12h.
		if n > 5 && buf[4] == 0x06 && buf[5]&0x3f == 0x12 {
			f.rakp1.Add(1)
		}
		if f.silent.Load() {
			continue
		}
		if n := f.drop.Load(); n > 0 && f.drop.CompareAndSwap(n, n-1) {
			continue
		}
		return n, addr, nil
	}
}

// recorded is one in-session command the simulator handled.
type recorded struct {
	session uint32
	cmd     types.Command
	data    []byte
}

// recorder sees every command dispatched to a handler.
type recorder struct {
	mu            sync.Mutex
	cmds          []recorded
	delay         time.Duration // added to every in-session command
	setInProgress bool          // accept boot option parameter 0 (the reference BMC refuses it)
}

func (r *recorder) middleware(next handlers.Handler) handlers.Handler {
	return handlers.HandlerFunc(func(ctx context.Context, hctx *handlers.HandlerContext, data []byte) ([]byte, types.CompletionCode, error) {
		if hctx == nil || hctx.Session == nil {
			return next.Handle(ctx, hctx, data)
		}
		id := hctx.Session.BMCID
		r.mu.Lock()
		r.cmds = append(r.cmds, recorded{id, hctx.Command, append([]byte(nil), data...)})
		delay, sip := r.delay, r.setInProgress
		r.mu.Unlock()
		time.Sleep(delay)
		if sip && hctx.Command == types.CommandSetSystemBootOptions && len(data) == 2 && data[0]&0x7f == 0 {
			return nil, types.CodeOK, nil
		}
		return next.Handle(ctx, hctx, data)
	})
}

// commands returns the recorded commands with ID cmd.
func (r *recorder) commands(cmd types.Command) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, c := range r.cmds {
		if c.cmd.ID == cmd.ID && c.cmd.NetFn == cmd.NetFn {
			out = append(out, c)
		}
	}
	return out
}

func (r *recorder) sessions() map[uint32]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[uint32]bool{}
	for _, c := range r.cmds {
		out[c.session] = true
	}
	return out
}

// sim is one simulated BMC.
type sim struct {
	host    string
	port    int
	bmc     *ipmibmc.BMC
	chassis *fakeChassis
	console *mock.FakeConsoleConn
	conn    *faultConn
	rec     *recorder
	srv     *server.Server
}

type simOption func(*sim)

func withChassis(f func(*fakeChassis)) simOption { return func(s *sim) { f(s.chassis) } }
func withRecorder(f func(*recorder)) simOption   { return func(s *sim) { f(s.rec) } }

func newSim(t *testing.T, opts ...simOption) *sim {
	t.Helper()
	s := &sim{
		chassis: &fakeChassis{cycleDelay: 100 * time.Millisecond},
		console: &mock.FakeConsoleConn{},
		rec:     &recorder{},
	}
	for _, o := range opts {
		o(s)
	}
	m := mock.New()
	m.SetConsole(&mock.Console{Conn: s.console})
	s.bmc = ipmibmc.New(ipmibmc.DeviceInfo{IPMIVersion: 0x20}, [16]byte{'l', 'a', 'b'}, simHAL{m, s.chassis},
		ipmibmc.WithClock(clock.Real))
	u, err := s.bmc.Users.Add(2, simUser)
	if err != nil {
		t.Fatal(err)
	}
	u.SetPassword([]byte(simPassword))
	u.Enabled = true
	u.ChannelAccess[1] = ipmibmc.UserChannelAccess{MaxPrivilege: ipmibmc.PrivilegeLevelAdministrator, Enabled: true}

	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s.conn = &faultConn{Conn: udp.Wrap(pc, udp.WithReadTimeout(200*time.Millisecond))}
	reg := handlers.NewRegistry()
	reg.Use(s.rec.middleware)
	handlers.RegisterAllHandlers(reg)
	s.srv = server.NewServer(s.bmc, s.conn, server.WithHandlerRegistry(reg))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.srv.Serve(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		_ = s.srv.Close()
		<-done
		s.chassis.stop()
	})
	addr := pc.LocalAddr().(*net.UDPAddr)
	s.host, s.port = addr.IP.String(), addr.Port
	return s
}

// config is a client configuration for this BMC. The timeout is generous
// so that a loaded machine causes no retries; tests of silence shorten it
// (fastConfig).
func (s *sim) config() Config {
	return Config{
		Host:        s.host,
		Port:        s.port,
		User:        simUser,
		Password:    simPassword,
		CipherSuite: 3,
		Timeout:     2 * time.Second,
		Retries:     3,
	}
}

// fastConfig is config with a 300ms timeout, for tests of a silent BMC.
func (s *sim) fastConfig() Config {
	cfg := s.config()
	cfg.Timeout = 300 * time.Millisecond
	return cfg
}

// logBuffer collects a client's debug log; it checks at cleanup that the
// password never appeared in it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newClient returns a client for cfg logging at debug level into the
// returned buffer, with testTiming; it is closed at cleanup, and its log
// checked for the password.
func newClient(t *testing.T, cfg Config) (*Client, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	c := New(cfg, slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})))
	c.t = testTiming
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if bytes.Contains([]byte(lb.String()), []byte(cfg.Password)) && cfg.Password != "" {
			t.Errorf("the password appears in the log:\n%s", lb)
		}
		if testing.Verbose() && t.Failed() {
			t.Logf("client log:\n%s", lb)
		}
	})
	return c, lb
}

// ctxFor returns a context that ends after d and at cleanup.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

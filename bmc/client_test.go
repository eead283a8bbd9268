package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"
)

// TestConcurrentCommands: many goroutines use one client at once; every
// call succeeds on the first try over one session, which shows that the
// commands were serialised (go-ipmi mixes up sequence numbers otherwise).
func TestConcurrentCommands(t *testing.T) {
	s := newSim(t, withRecorder(func(r *recorder) { r.delay = time.Millisecond }))
	c, log := newClient(t, s.config())
	const workers, rounds = 16, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				ctx := ctxFor(t, 20*time.Second)
				var err error
				switch (w + r) % 4 {
				case 0:
					_, err = c.PowerState(ctx)
				case 1:
					_, _, err = c.BootDevice(ctx)
				case 2:
					err = c.SetBootDevice(ctx, BootPXE, BootOptions{EFI: w%2 == 0})
				case 3:
					err = c.Power(ctx, PowerOn)
				}
				if err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", w, r, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if strings.Contains(log.String(), "retrying") {
		t.Errorf("commands were retried, so some collided:\n%s", log)
	}
	if n := len(s.rec.sessions()); n != 1 {
		t.Errorf("%d sessions used, want 1", n)
	}
	if on, _, _, _ := s.chassis.state(); !on {
		t.Error("node is off")
	}
}

// TestKeepalive: an idle session is kept alive by the client's own
// keepalive, over the same session, and only while idle.
func TestKeepalive(t *testing.T) {
	s := newSim(t)
	c, _ := newClient(t, s.config())
	if _, err := c.PowerState(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	ka := testTiming.keepalive
	// Idle, the session gets keepalives: wait for two (about 4*ka on an
	// idle machine) rather than assert them after a guessed time.
	waitFor(t, "two keepalives of an idle session", 10*time.Second, func() bool {
		return len(s.rec.commands(types.CommandGetSessionInfo)) >= 2
	})
	idle := len(s.rec.commands(types.CommandGetSessionInfo))
	for end := time.Now().Add(4 * ka); time.Now().Before(end); {
		if _, err := c.PowerState(ctxFor(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ka / 5)
	}
	if busy := len(s.rec.commands(types.CommandGetSessionInfo)) - idle; busy > 1 {
		t.Errorf("%d keepalives while commands kept the session busy", busy)
	}
	if n := len(s.rec.sessions()); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
}

// TestSilentBMC: a BMC that stops answering gives an error naming host:port,
// the operation and the tries, within the ctx deadline; the client recovers
// when the BMC answers again.
func TestSilentBMC(t *testing.T) {
	s := newSim(t)
	cfg := s.fastConfig()
	c, _ := newClient(t, cfg)
	if err := c.Power(ctxFor(t, 5*time.Second), PowerOn); err != nil {
		t.Fatal(err)
	}
	s.conn.silent.Store(true)

	// Retries run out before the deadline: 4 tries of 300ms plus backoff.
	start := time.Now()
	err := c.Power(ctxFor(t, 5*time.Second), PowerOff)
	took := time.Since(start)
	t.Logf("silent BMC, retries exhausted: %v", err)
	wantPrefix := fmt.Sprintf("bmc 127.0.0.1:%d: power off: no answer after 4 tries in ", s.port)
	if err == nil || !strings.HasPrefix(err.Error(), wantPrefix) {
		t.Errorf("error %q, want prefix %q", err, wantPrefix)
	}
	if took < 1200*time.Millisecond || took > 2500*time.Millisecond {
		t.Errorf("gave up after %s, want about 4 x 300ms + backoff", took)
	}

	// The deadline comes first.
	start = time.Now()
	err = c.Power(ctxFor(t, 500*time.Millisecond), PowerOff)
	took = time.Since(start)
	t.Logf("silent BMC, deadline: %v", err)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), fmt.Sprintf("bmc 127.0.0.1:%d: power off: no answer after", s.port)) {
		t.Errorf("error %v, want a no-answer error wrapping context.DeadlineExceeded", err)
	}
	// Cut short by the deadline, not by the tries running out: those take
	// at least their timeouts (a bound the timers guarantee; how soon
	// after the deadline a busy machine returns is not the point).
	if tries := time.Duration(cfg.Retries+1) * cfg.Timeout; took >= tries {
		t.Errorf("returned %s after a 500ms deadline, as late as %d tries of %s", took, cfg.Retries+1, cfg.Timeout)
	}

	s.conn.silent.Store(false)
	if err := c.Power(ctxFor(t, 5*time.Second), PowerOff); err != nil {
		t.Fatalf("after the BMC answers again: %v", err)
	}
	if on, _, _, _ := s.chassis.state(); on {
		t.Error("node still on")
	}
}

// TestBMCGone: a BMC whose port is closed (ICMP port unreachable) counts as
// not answering, with the same error.
func TestBMCGone(t *testing.T) {
	s := newSim(t)
	c, _ := newClient(t, s.fastConfig())
	if _, err := c.PowerState(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.srv.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := c.PowerState(ctxFor(t, 5*time.Second))
	t.Logf("closed BMC port: %v", err)
	want := fmt.Sprintf("bmc 127.0.0.1:%d: power status: no answer after 4 tries in ", s.port)
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want prefix %q", err, want)
	}
}

// TestSessionLost: a BMC that forgets the session (it restarted, or expired
// it) silently drops its packets; the client reconnects and the command
// succeeds.
func TestSessionLost(t *testing.T) {
	s := newSim(t)
	c, _ := newClient(t, s.fastConfig())
	if _, err := c.PowerState(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for id := range s.rec.sessions() {
		if err := s.bmc.Sessions.Close(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Power(ctxFor(t, 10*time.Second), PowerOn); err != nil {
		t.Fatalf("after the BMC lost the session: %v", err)
	}
	if n := len(s.rec.sessions()); n != 2 {
		t.Errorf("%d sessions used, want 2", n)
	}
}

// TestAuthFailure: a wrong password or user fails at once, without retries,
// and the error does not contain the password.
func TestAuthFailure(t *testing.T) {
	for _, tt := range []struct{ name, user, password string }{
		{"wrong password", simUser, "not-the-Pa55word-42"},
		{"unknown user", "nobody", simPassword},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t)
			cfg := s.config()
			cfg.User, cfg.Password = tt.user, tt.password
			c, _ := newClient(t, cfg)
			start := time.Now()
			_, err := c.PowerState(ctxFor(t, 5*time.Second))
			took := time.Since(start)
			t.Logf("%s: %v", tt.name, err)
			if err == nil || !strings.Contains(err.Error(), "authentication as user") {
				t.Fatalf("error %v, want an authentication error", err)
			}
			if strings.Contains(err.Error(), tt.password) {
				t.Errorf("the password is in the error: %v", err)
			}
			if n := s.conn.rakp1.Load(); n != 1 {
				t.Errorf("%d RAKP message 1 sent, want 1 (no retries)", n)
			}
			// At once: not after waiting for an answer (the RAKP count
			// shows it was not retried).
			if took >= cfg.Timeout {
				t.Errorf("took %s to fail, the %s timeout for an answer", took, cfg.Timeout)
			}
		})
	}
}

func TestCipherSuites(t *testing.T) {
	s := newSim(t)
	for _, suite := range []int{0, 3, 17} {
		cfg := s.config()
		cfg.CipherSuite = suite
		c, _ := newClient(t, cfg)
		start := time.Now()
		if _, err := c.PowerState(ctxFor(t, 5*time.Second)); err != nil {
			t.Errorf("cipher suite %d: %v", suite, err)
		}
		t.Logf("cipher suite %d: connect + get chassis status in %s", suite, time.Since(start).Round(time.Millisecond))
	}

	cfg := s.config()
	cfg.CipherSuite = 42
	c, _ := newClient(t, cfg)
	start := time.Now()
	_, err := c.PowerState(ctxFor(t, 5*time.Second))
	// Immediate: not after waiting for the BMC (its timeout is the bound
	// that tells; a busy machine may take a while for anything).
	if took := time.Since(start); err == nil || !strings.Contains(err.Error(), "cipher suite 42") || took >= cfg.Timeout {
		t.Errorf("suite 42: %v after %s, want an immediate error", err, took)
	}
	// A suite the BMC does not offer is refused by the BMC, not retried.
	cfg.CipherSuite = 1
	c, _ = newClient(t, cfg)
	_, err = c.PowerState(ctxFor(t, 5*time.Second))
	t.Logf("suite 1: %v", err)
	if err == nil || strings.Contains(err.Error(), "tries") {
		t.Errorf("suite 1: %v, want an error without retries", err)
	}
}

func TestClose(t *testing.T) {
	s := newSim(t)
	c := New(s.config(), nil)
	if _, err := c.PowerState(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	ids := s.rec.sessions()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for id := range ids {
		if _, err := s.bmc.Sessions.Get(id); err == nil {
			t.Errorf("session %x still open on the BMC after Close", id)
		}
	}
	_, err := c.PowerState(ctxFor(t, time.Second))
	if !errors.Is(err, net.ErrClosed) {
		t.Errorf("PowerState after Close: %v, want net.ErrClosed", err)
	}
}

// TestCloseCancels: Close ends a call that waits for a silent BMC.
func TestCloseCancels(t *testing.T) {
	s := newSim(t)
	cfg := s.fastConfig()
	cfg.Retries = 100
	c := New(cfg, nil)
	s.conn.silent.Store(true)
	errc := make(chan error, 1)
	go func() {
		_, err := c.PowerState(context.Background())
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("call cut by Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end the call")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %s", d)
	}
}

func TestConfigHidesPassword(t *testing.T) {
	cfg := Config{Host: "10.0.0.5", User: "root", Password: "hunter2-secret", CipherSuite: 3}
	for _, s := range []string{
		cfg.String(), fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
		cfg.LogValue().String(),
	} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("password in %q", s)
		}
	}
	if !strings.Contains(cfg.String(), "10.0.0.5:623") {
		t.Errorf("String() = %q, want the address with the default port", cfg.String())
	}
}

func TestDefaults(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{0, DefaultRetries}, {-1, 0}, {7, 7}} {
		if got := (Config{Retries: tt.in}).withDefaults().Retries; got != tt.want {
			t.Errorf("Retries %d becomes %d, want %d", tt.in, got, tt.want)
		}
	}
	cfg := Config{}.withDefaults()
	if cfg.Port != DefaultPort || cfg.Timeout != DefaultTimeout {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestBackoff(t *testing.T) {
	c := New(Config{}, nil)
	defer c.Close()
	want := []time.Duration{200, 400, 800, 1600, 2000, 2000}
	for i, w := range want {
		if d := c.backoff(i + 1); d != w*time.Millisecond {
			t.Errorf("backoff(%d) = %s, want %s", i+1, d, w*time.Millisecond)
		}
	}
	if d := c.backoff(1000); d != 2*time.Second {
		t.Errorf("backoff(1000) = %s", d)
	}
}

func TestClassify(t *testing.T) {
	timeout := &net.OpError{Op: "read", Err: timeoutErr{}}
	tests := []struct {
		name string
		err  error
		want errKind
	}{
		{"udp timeout", fmt.Errorf("IPMI LAN: x: %w", timeout), kindNoAnswer},
		{"no datagram matched", errors.New("udp exchange: no datagram matched before deadline"), kindNoAnswer},
		{"port unreachable", fmt.Errorf("read: %w", &net.OpError{Op: "read", Err: errConnRefused()}), kindNoAnswer},
		{"node busy", types.NewResponseError(types.CodeNodeBusy, "busy"), kindBusy},
		{"invalid command", types.NewResponseError(types.CodeInvalidCommand, "no"), kindPermanent},
		{"no session slot", types.NewRmcpStatusError(types.RmcpStatusCodeNoResToCreateSess), kindBusy},
		{"unauthorized name", types.NewRmcpStatusError(types.RmcpStatusCodeUnauthorizedName), kindAuth},
		{"no cipher suite", types.NewRmcpStatusError(types.RmcpStatusCodeNoCipherSuiteMatch), kindPermanent},
		{"privilege at connect", &connectError{types.NewResponseError(types.CodeInsufficientPrivilege, "")}, kindAuth},
		{"garbled", errors.New("unpack rmcp failed"), kindOther},
		// go-ipmi's Connect flattens the errors of the suites it tried.
		{"flattened RAKP", errors.New("connect20 failed after try all cipher suite ids ([3]), errs: \ncmd: rakp1 failed with cipher suite id (3), err: validate rakp2 message failed, err: RAKP2 authentication code mismatch: RAKP authentication failed"), kindAuth},
		{"flattened status", errors.New("connect20 failed after try all cipher suite ids ([17]), errs: \ncmd: RMCP+ Open Session failed with cipher suite id (17), err: RMCP+ status 0x11: No Cipher Suite Match"), kindPermanent},
		{"flattened unauthorized name", errors.New("errs: \nerr: RMCP+ status 0x0d: Unauthorized name"), kindAuth},
		{"flattened timeout", errors.New("errs: \ncmd: RMCP+ Open Session failed with cipher suite id (17), err: udp exchange: no datagram matched before deadline"), kindNoAnswer},
	}
	for _, tt := range tests {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("%s: classify = %d, want %d", tt.name, got, tt.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestMalformedAnswer: an encrypted answer too short to decrypt (go-ipmi
// v0.9.1 indexed past its end, on a goroutine of its own: the process
// died) fails that try, not the process; the command is tried again and
// succeeds.
func TestMalformedAnswer(t *testing.T) {
	s := newSim(t)
	c, lb := newClient(t, s.fastConfig())
	if _, err := c.PowerState(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	s.conn.mangle.Store(1)
	if _, err := c.PowerState(ctxFor(t, 20*time.Second)); err != nil {
		t.Fatalf("after one malformed answer: %v", err)
	}
	if s.conn.mangle.Load() != 0 {
		t.Fatal("no answer was cut short")
	}
	if !strings.Contains(lb.String(), "retrying") {
		t.Errorf("the cut answer did not cost a try:\n%s", lb)
	}
	if _, err := c.PowerState(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("the command after: %v", err)
	}
}

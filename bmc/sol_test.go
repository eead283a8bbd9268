package bmc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	ipmi "github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/labctl/labctl/sol"
)

// readUntil reads from r until the output contains want or d passes.
func readUntil(t *testing.T, r io.Reader, want string, d time.Duration) string {
	t.Helper()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		var out bytes.Buffer
		buf := make([]byte, 512)
		for !strings.Contains(out.String(), want) {
			n, err := r.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				done <- result{out.String(), err}
				return
			}
		}
		done <- result{out.String(), nil}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("reading %q: got %q, then %v", want, res.out, res.err)
		}
		return res.out
	case <-time.After(d):
		t.Fatalf("no %q within %s", want, d)
	}
	return ""
}

// readErr waits for r's Read to fail and returns the error.
func readErr(t *testing.T, r io.Reader, d time.Duration) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := r.Read(buf); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(d):
		t.Fatalf("Read still succeeds after %s", d)
	}
	return nil
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSOL: bytes both ways over an encrypted, authenticated payload; the
// BMC deactivating it ends the stream with sol.ErrClosedByBMC.
func TestSOL(t *testing.T) {
	s := newSim(t)
	cfg := s.config()
	cfg.Timeout = 500 * time.Millisecond // BMC-side deactivation shows after 4 of these
	c, _ := newClient(t, cfg)
	st, err := c.OpenSOL(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	id := s.bmc.SOL.ActiveSessionID(1)
	if id == 0 {
		t.Fatal("no SOL payload active on the BMC")
	}
	if inst := s.bmc.SOL.InstanceBySession(id); inst == nil || !inst.OutboundEncrypted() {
		t.Error("SOL payload not activated with encryption")
	}

	checkExchange(t, s, st, 400)

	s.bmc.SOL.CloseAll() // the BMC deactivates the payload, as "sol deactivate" elsewhere does
	err = readErr(t, st, 5*time.Second)
	t.Logf("after BMC-side deactivation: %v", err)
	if !errors.Is(err, sol.ErrClosedByBMC) || !strings.Contains(err.Error(), "bmc "+c.addr) {
		t.Errorf("Read error %v, want one wrapping sol.ErrClosedByBMC naming the BMC", err)
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, sol.ErrClosedByBMC) {
		t.Errorf("Write after the end: %v, want sol.ErrClosedByBMC", err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("Close after BMC-side deactivation: %v", err)
	}
}

// A stream the BMC ended closes without an error even when the BMC does
// not answer the deactivation either (gone, or too busy): there is nothing
// of ours left to release.
func TestSOLCloseAfterBMCEndedIt(t *testing.T) {
	s := newSim(t)
	cfg := s.config()
	cfg.Timeout = 300 * time.Millisecond
	c, _ := newClient(t, cfg)
	st, err := c.OpenSOL(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	s.bmc.SOL.CloseAll()
	if err := readErr(t, st, 5*time.Second); !errors.Is(err, sol.ErrClosedByBMC) {
		t.Fatalf("Read error %v, want sol.ErrClosedByBMC", err)
	}
	s.conn.silent.Store(true)
	if err := st.Close(); err != nil {
		t.Errorf("Close of a stream the BMC ended, the BMC silent: %v", err)
	}
}

// checkExchange: a login prompt reaches the stream, typed input reaches
// the node's console, and output of lines lines (many times what one SOL
// packet holds) arrives whole and in order.
func checkExchange(t *testing.T, s *sim, st io.ReadWriter, lines int) {
	t.Helper()
	s.console.FeedRX([]byte("\r\ninitrd login: "))
	readUntil(t, st, "initrd login: ", 5*time.Second)
	if _, err := st.Write([]byte("root\r")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "typed input on the console", 5*time.Second, func() bool {
		return s.console.TXString() == "root\r"
	})
	var big bytes.Buffer
	for i := range lines {
		big.WriteString(strings.Repeat(string(rune('a'+i%26)), 20) + "\n")
	}
	big.WriteString("END\n")
	s.console.FeedRX(big.Bytes())
	if got := readUntil(t, st, "END\n", 10*time.Second); got != big.String() {
		t.Errorf("console output mangled: got %d bytes, want %d", len(got), big.Len())
	}
}

// TestSOLReadsWithoutPolling: a stream reads the output the BMC sends
// unasked as it arrives, however long its poll interval: with polls and
// keepalives an hour apart, a prompt, the echo of typed input and output
// many packets long still arrive whole.
func TestSOLReadsWithoutPolling(t *testing.T) {
	s := newSim(t)
	c, _ := newClient(t, s.config())
	c.t.solPoll, c.t.solIdlePoll, c.t.keepalive = time.Hour, 2*time.Hour, time.Hour
	st, err := c.OpenSOL(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	checkExchange(t, s, st, 100)
}

// solAtPrompt opens an SOL stream on s's BMC, whose SOL retry interval
// it sets to 500 ms (on a busy machine an ACK later than the default
// 50 ms would bring a resend), with the client polling every poll while
// output flows and hardly ever else, and reads the console's prompt. The
// stream closes when the test ends.
func solAtPrompt(t *testing.T, s *sim, poll time.Duration) io.ReadWriteCloser {
	t.Helper()
	if cc := s.bmc.SOL.Config().SetParam(4, []byte{3, 50}); cc != types.CodeOK {
		t.Fatalf("set the SOL retry interval: %v", cc)
	}
	c, _ := newClient(t, s.config())
	c.t.solPoll, c.t.solIdlePoll, c.t.keepalive = poll, time.Hour, time.Hour
	st, err := c.OpenSOL(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s.console.FeedRX([]byte("\r\nfake# "))
	readUntil(t, st, "fake# ", 5*time.Second)
	return st
}

// TestSOLLostAckOnlyPacket: an ACK-only packet that is lost costs a
// resend, not output: the BMC sends the packet again after its retry
// interval, the stream takes none of its bytes twice, acknowledges it,
// and output goes on.
func TestSOLLostAckOnlyPacket(t *testing.T) {
	s := newSim(t)
	// No polls while the test runs: the client's next packet after the
	// output is its acknowledgement.
	st := solAtPrompt(t, s, 30*time.Second)

	before := s.conn.answers.Load()
	s.conn.drop.Store(1)
	s.console.FeedRX([]byte("first\r\n"))
	out := readUntil(t, st, "first\r\n", 5*time.Second)
	waitFor(t, "the acknowledgement to be lost", 10*time.Second, func() bool { return s.conn.drop.Load() == 0 })
	waitFor(t, "the BMC to resend the packet whose ACK was lost", 10*time.Second, func() bool {
		return s.conn.answers.Load()-before >= 2
	})
	s.console.FeedRX([]byte("second\r\n"))
	out += readUntil(t, st, "second\r\n", 5*time.Second)
	if strings.Count(out, "first") != 1 || strings.Count(out, "second") != 1 {
		t.Errorf("output %q: want each line once", out)
	}
}

// TestSOLPushedOutputIsNotPolled: output the BMC sends unasked costs the
// exchange that takes it and the one that acknowledges it, and no polls:
// the poll interval backs off as on a quiet console. Polling every solPoll
// after each piece of output cost three polls and a wake more per piece
// here (the polls took the output before the BMC sent it, every time).
func TestSOLPushedOutputIsNotPolled(t *testing.T) {
	s := newSim(t)
	st := solAtPrompt(t, s, 20*time.Millisecond)

	const pieces = 10
	before, beforeAnswers := s.conn.packets.Load(), s.conn.answers.Load()
	for i := range pieces {
		line := fmt.Sprintf("piece %d\r\n", i)
		s.console.FeedRX([]byte(line))
		readUntil(t, st, line, 5*time.Second)
		time.Sleep(200 * time.Millisecond) // past 3 polls' worth of backoff from solPoll
	}
	got, answers := s.conn.packets.Load()-before, s.conn.answers.Load()-beforeAnswers
	t.Logf("%d pieces of output, %d packets from the client, %d from the BMC", pieces, got, answers)
	// One ACK-only packet per piece, and a few polls while the interval
	// backs off (or ACKs of a BMC's retransmissions on a busy machine);
	// polling after each piece makes two more per piece, and an
	// acknowledgement that asks for an answer one more each way.
	if got >= 1.8*pieces {
		t.Errorf("%d packets for %d pieces of output the BMC sent unasked: the stream polls or asks for answers while output flows", got, pieces)
	}
	// The pieces, and the answers to those few polls: the BMC does not
	// answer an ACK-only packet.
	if answers >= 1.8*pieces {
		t.Errorf("%d packets from the BMC for %d pieces of output: it answered the acknowledgements", answers, pieces)
	}
}

// TestSOLCheck: Check passes on a working stream without disturbing it:
// without asking while the BMC answered the stream's SOL packets lately,
// else asking the BMC; and fails once another client took the payload
// (the BMC names that client's session as the payload's).
func TestSOLCheck(t *testing.T) {
	s := newSim(t)
	c, _ := newClient(t, s.config())
	st, err := c.OpenSOL(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	checker, ok := st.(interface{ Check(context.Context) error })
	if !ok {
		t.Fatalf("the stream (%T) has no Check", st)
	}
	checkExchange(t, s, st, 50) // the BMC answered the stream's packets
	c.t.solVouch = time.Hour
	if err := checker.Check(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("Check of a stream the BMC answered lately: %v", err)
	}
	if n := len(s.rec.commands(types.CommandGetPayloadInstanceInfo)); n != 0 {
		t.Errorf("Check of a stream the BMC answered lately asked the BMC %d times, want none", n)
	}
	c.t.solVouch = 0
	for range 3 {
		if err := checker.Check(ctxFor(t, 5*time.Second)); err != nil {
			t.Fatalf("Check of a working stream: %v", err)
		}
	}
	if n := len(s.rec.commands(types.CommandGetPayloadInstanceInfo)); n != 3 {
		t.Errorf("3 Checks asked the BMC %d times", n)
	}
	s.console.FeedRX([]byte("after the checks\n"))
	readUntil(t, st, "after the checks", 5*time.Second)

	other := rawClient(t, s)
	if err := deactivateSOL(ctxFor(t, 5*time.Second), other); err != nil {
		t.Fatal(err)
	}
	if _, err := activateSOL(ctxFor(t, 5*time.Second), other); err != nil {
		t.Fatal(err)
	}
	err = checker.Check(ctxFor(t, 5*time.Second))
	t.Logf("Check after another client took the payload: %v", err)
	if err == nil || !strings.Contains(err.Error(), "bmc "+c.addr) {
		t.Errorf("Check after another client took the payload: %v, want an error naming the BMC", err)
	}
}

// rawClient is another console on the sim's BMC: a go-ipmi client with a
// session open, closed when the test ends.
func rawClient(t *testing.T, s *sim) *ipmi.Client {
	t.Helper()
	c, err := ipmi.NewClient(s.host, s.port, simUser, simPassword)
	if err != nil {
		t.Fatal(err)
	}
	c.WithCipherSuiteID(3).WithTimeout(300 * time.Millisecond)
	if err := c.Connect(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

// TestSOLStalePayload: a payload left active by a console that went away is
// deactivated and the activation retried.
func TestSOLStalePayload(t *testing.T) {
	s := newSim(t)
	stale := rawClient(t, s)
	if _, err := activateSOL(ctxFor(t, 5*time.Second), stale); err != nil {
		t.Fatal(err)
	}
	staleID := s.bmc.SOL.ActiveSessionID(1)

	c, log := newClient(t, s.config())
	st, err := c.OpenSOL(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatalf("OpenSOL over a stale payload: %v", err)
	}
	defer st.Close()
	if id := s.bmc.SOL.ActiveSessionID(1); id == 0 || id == staleID {
		t.Errorf("active SOL session %x, stale one %x", id, staleID)
	}
	if !strings.Contains(log.String(), "already active") {
		t.Errorf("the stale payload is not logged:\n%s", log)
	}
	s.console.FeedRX([]byte("still here\n"))
	readUntil(t, st, "still here", 5*time.Second)
}

// TestSOLClose: Close deactivates the payload and closes the session, once;
// Client.Close closes the streams still open.
func TestSOLClose(t *testing.T) {
	s := newSim(t)
	c := New(s.config(), nil)
	st, err := c.OpenSOL(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if id := s.bmc.SOL.ActiveSessionID(1); id != 0 {
		t.Errorf("SOL still active (session %x) after Close", id)
	}
	if n := s.bmc.Sessions.Count(); n != 0 {
		t.Errorf("%d sessions open on the BMC after Close", n)
	}
	if _, err := st.Read(make([]byte, 8)); !errors.Is(err, sol.ErrClosed) {
		t.Errorf("Read after Close: %v, want sol.ErrClosed", err)
	}

	st2, err := c.OpenSOL(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := st2.Read(make([]byte, 8))
		errc <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, sol.ErrClosed) {
			t.Errorf("blocked Read after Client.Close: %v, want sol.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Client.Close left a Read blocked")
	}
	if id := s.bmc.SOL.ActiveSessionID(1); id != 0 {
		t.Errorf("SOL still active after Client.Close")
	}
	if _, err := c.OpenSOL(ctxFor(t, time.Second)); err == nil {
		t.Error("OpenSOL after Close succeeded")
	}
}

// TestSOLSilentBMC: a BMC that stops answering ends the stream (sol.ErrClosedByBMC),
// and one that does not answer at all fails OpenSOL with the usual error.
func TestSOLSilentBMC(t *testing.T) {
	s := newSim(t)
	cfg := s.fastConfig()
	c, _ := newClient(t, cfg)
	st, err := c.OpenSOL(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	s.conn.silent.Store(true)
	err = readErr(t, st, 5*time.Second)
	if !errors.Is(err, sol.ErrClosedByBMC) {
		t.Errorf("Read from a silent BMC: %v, want sol.ErrClosedByBMC", err)
	}
	start := time.Now()
	_ = st.Close() // deactivation cannot get through; Close must not hang
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %s", d)
	}

	start = time.Now()
	_, err = c.OpenSOL(ctxFor(t, 5*time.Second))
	t.Logf("OpenSOL, silent BMC: %v (%s)", err, time.Since(start).Round(time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "bmc "+c.addr+": sol open: no answer after 4 tries") {
		t.Errorf("OpenSOL error %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.OpenSOL(ctx)
	// Cut short by the deadline, not by the tries running out: those take
	// at least their timeouts (how soon after the deadline a busy machine
	// returns is not the point).
	if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || took >= time.Duration(cfg.Retries+1)*cfg.Timeout {
		t.Errorf("OpenSOL with a 400ms deadline: %v after %s", err, took)
	}
}

package sol_test

import (
	"context"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/sol"
	"github.com/labctl/labctl/sol/soltest"
)

// transcriptBuffer is a transcript destination the test can read while the
// session writes.
type transcriptBuffer struct{ testutil.SyncBuffer }

// records parses the transcript, failing the test on a bad line.
func (b *transcriptBuffer) records(t *testing.T) []sol.Record {
	t.Helper()
	var recs []sol.Record
	for _, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		r, err := sol.ParseRecord([]byte(line))
		if err != nil {
			t.Fatalf("transcript: %v", err)
		}
		recs = append(recs, r)
	}
	return recs
}

// events returns the transcript's event messages.
func (b *transcriptBuffer) events(t *testing.T) []string {
	var ev []string
	for _, r := range b.records(t) {
		if r.Dir == sol.Event {
			ev = append(ev, string(r.Data))
		}
	}
	return ev
}

// joined is the data of the transcript's records of direction d, joined
// up: a line typed or printed slowly (a pause over the transcript's 200 ms
// flush, which a busy machine makes anywhere) spans several records.
func (b *transcriptBuffer) joined(t *testing.T, d sol.Direction) string {
	t.Helper()
	var s strings.Builder
	for _, r := range b.records(t) {
		if r.Dir == d {
			s.Write(r.Data)
		}
	}
	return s.String()
}

// seen waits until sub has delivered console output that contains want.
func seen(t *testing.T, sub *sol.Subscription, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out strings.Builder
	for !strings.Contains(out.String(), want) {
		r, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for output %q: %v (got %q)", want, err, out.String())
		}
		if r.Dir == sol.Read {
			out.Write(r.Data)
		}
	}
}

// fastOptions are session options with short backoffs for tests.
func fastOptions(tr *transcriptBuffer) sol.Options {
	opts := sol.Options{
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  50 * time.Millisecond,
		GiveUpAfter: 10 * time.Second,
	}
	if tr != nil {
		opts.Transcript = tr
	}
	return opts
}

// openSession opens a session on d and closes it at the end of the test.
func openSession(t *testing.T, d sol.Dialer, opts sol.Options) *sol.Session {
	t.Helper()
	s := sol.NewSession(d, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Open(ctx); err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// atPrompt opens a session on c with options opts, has the shell print its
// prompt, waits for it and claims the console for "job".
func atPrompt(t *testing.T, c *soltest.Console, opts sol.Options) (*sol.Session, *sol.Writer) {
	t.Helper()
	s := openSession(t, c, opts)
	c.Prompt()
	expect(t, s, 5*time.Second, `fake# `)
	return s, claim(t, s, "job")
}

// newConsole starts a fake console and stops it at the end of the test.
func newConsole(t *testing.T, cfg soltest.Config) *soltest.Console {
	c := soltest.New(cfg)
	t.Cleanup(c.Close)
	return c
}

func expect(t *testing.T, s *sol.Session, timeout time.Duration, pattern string) sol.Match {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m, err := s.Expect(ctx, regexp.MustCompile(pattern))
	if err != nil {
		t.Fatalf("expect %q: %v", pattern, err)
	}
	return m
}

func claim(t *testing.T, s *sol.Session, owner string) *sol.Writer {
	t.Helper()
	w, err := s.Claim(owner, false)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	t.Cleanup(w.Release)
	return w
}

func typeText(t *testing.T, w *sol.Writer, text string, p sol.Pacing) sol.TypeReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := w.Type(ctx, text, p)
	if err != nil {
		t.Fatalf("type %q: %v", text, err)
	}
	return rep
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkGoroutines fails the test if goroutines started during it are still
// running once it ends.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutines: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:n])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

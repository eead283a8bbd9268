package fakeos

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// console is the node's side of a Login under test: what it said, with a
// way to wait for it.
type console struct {
	mu   sync.Mutex
	out  strings.Builder
	more chan struct{}
}

func newConsole() *console { return &console{more: make(chan struct{}, 1)} }

func (c *console) say(p []byte) {
	c.mu.Lock()
	c.out.Write(p)
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

// expect waits for want and consumes the output up to its end.
func (c *console) expect(t *testing.T, ctx context.Context, want string) string {
	t.Helper()
	for {
		c.mu.Lock()
		s := c.out.String()
		if before, rest, ok := strings.Cut(s, want); ok {
			c.out.Reset()
			c.out.WriteString(rest)
			c.mu.Unlock()
			return before
		}
		c.mu.Unlock()
		select {
		case <-c.more:
		case <-ctx.Done():
			t.Fatalf("no %q on the console; got %q", want, s)
		}
	}
}

func startLogin(t *testing.T, late time.Duration) (*Login, *console, context.Context, context.CancelFunc, chan bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c := newConsole()
	l := NewLogin(LoginConfig{Hostname: "testos", Username: "root", Password: "s3cret", Say: c.say, LateEnter: late})
	done := make(chan bool, 1)
	go func() { done <- l.Run(ctx) }()
	return l, c, ctx, cancel, done
}

func TestLoginExchange(t *testing.T) {
	l, c, ctx, _, done := startLogin(t, 0)
	c.expect(t, ctx, "testos login: ")
	l.Input([]byte("root\r"))
	if got := c.expect(t, ctx, "Password: "); got != "root\r\n" {
		t.Errorf("user name echoed as %q, want %q", got, "root\r\n")
	}
	l.Input([]byte("wrong\r"))
	if got := c.expect(t, ctx, "Login incorrect\r\n"); got != "\r\n" {
		t.Errorf("the password echoed: %q before Login incorrect", got)
	}
	c.expect(t, ctx, "testos login: ")
	// ^U kills a half-typed line; erase takes back one character.
	l.Input([]byte("rox\x15ro\x7fot\x08ot\r"))
	if got := c.expect(t, ctx, "Password: "); got != "rox^U\r\nro\b \bot\b \bot\r\n" {
		t.Errorf("line editing echoed %q", got)
	}
	l.Input([]byte("s3\x7f3cret\r"))
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("Run returned false for the right user name and password")
		}
	case <-ctx.Done():
		t.Fatal("Run did not return after the right user name and password")
	}
	if got := c.expect(t, ctx, "\r\n"); got != "" {
		t.Errorf("the password echoed: %q", got)
	}
}

func TestLoginLateEnter(t *testing.T) {
	late := 200 * time.Millisecond
	l, c, ctx, _, done := startLogin(t, late)
	c.expect(t, ctx, "testos login: ")
	start := time.Now()
	l.Input([]byte("root\r"))
	c.expect(t, ctx, "root\r\n")
	// The line is taken only when its Enter echoes, never sooner.
	if d := time.Since(start); d < late {
		t.Errorf("the Enter echoed after %v, want at least %v", d, late)
	}
	c.expect(t, ctx, "Password: ")
	l.Input([]byte("s3cret\r"))
	if ok := <-done; !ok {
		t.Fatal("Run returned false after a late Enter")
	}
}

func TestLoginEndsWithTheBoot(t *testing.T) {
	l, c, ctx, cancel, done := startLogin(t, 0)
	c.expect(t, ctx, "testos login: ")
	l.Input([]byte("root\r"))
	c.expect(t, ctx, "Password: ")
	cancel()
	if ok := <-done; ok {
		t.Fatal("Run returned true when its boot ended")
	}
}

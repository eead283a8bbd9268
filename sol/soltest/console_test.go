package soltest

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/sol"
)

func dial(t *testing.T, c *Console) io.ReadWriteCloser {
	t.Helper()
	st, err := c.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func waitLines(t *testing.T, c *Console, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(c.Lines()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("shell got %q, want %d lines", c.Lines(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c.Lines()
}

func TestLossRules(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		writes  []string // one Write each, 20 ms apart
		want    string
		dropped int
	}{
		{"burst through a well-behaved console", Config{}, []string{"abc\r"}, "abc", 0},
		{"min gap drops bytes arriving together", Config{Lossy: true, MaxUnechoed: 100, MinGap: time.Millisecond}, []string{"abc", "\r"}, "a", 2},
		{"backlog of one", Config{Lossy: true, MaxUnechoed: 1, EchoDelay: 10 * time.Millisecond}, []string{"abcd", "\r"}, "ab", 2},
		{"spaced bytes all arrive", Config{Lossy: true, MinGap: time.Millisecond, EchoDelay: time.Millisecond}, []string{"a", "b", "\r"}, "ab", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(tt.cfg)
			defer c.Close()
			st := dial(t, c)
			for _, w := range tt.writes {
				if _, err := st.Write([]byte(w)); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if got := waitLines(t, c, 1); got[0] != tt.want {
				t.Errorf("shell got %q, want %q", got[0], tt.want)
			}
			if c.Dropped() != tt.dropped {
				t.Errorf("dropped %d, want %d", c.Dropped(), tt.dropped)
			}
		})
	}
}

func TestBurstClosesStream(t *testing.T) {
	c := New(Config{BurstLimit: 4, BurstWindow: 10 * time.Millisecond})
	defer c.Close()
	st := dial(t, c)
	if _, err := st.Write([]byte("abcdef")); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadAll(st)
	if !errors.Is(err, sol.ErrClosedByBMC) {
		t.Fatalf("read after burst: %v", err)
	}
}

func TestCursorQuerySwallowsEarlyInput(t *testing.T) {
	// "x" goes right after the prompt, "y" once the query was read: a
	// query late enough that "x" comes before it on a busy machine too,
	// and no guess at when it came.
	c := New(Config{CursorQuery: 500 * time.Millisecond})
	defer c.Close()
	st := dial(t, c)
	c.Prompt()
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	queried := make(chan error, 1)
	go func() {
		buf := make([]byte, 100)
		var out strings.Builder
		for !strings.Contains(out.String(), "\x1b[6n") {
			n, err := st.Read(buf)
			if err != nil {
				queried <- err
				return
			}
			out.Write(buf[:n])
		}
		queried <- nil
	}()
	select {
	case err := <-queried:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no cursor position query after the prompt")
	}
	if _, err := st.Write([]byte("y\r")); err != nil {
		t.Fatal(err)
	}
	if got := waitLines(t, c, 1); got[0] != "y" || c.Swallowed() != 1 {
		t.Errorf("shell got %q, swallowed %d", got, c.Swallowed())
	}
}

func TestNewDialEndsPreviousStream(t *testing.T) {
	c := New(Config{})
	defer c.Close()
	first := dial(t, c)
	dial(t, c)
	if _, err := io.ReadAll(first); !errors.Is(err, sol.ErrClosedByBMC) {
		t.Errorf("first stream after a second dial: %v", err)
	}
	if c.Dials() != 2 {
		t.Errorf("dials %d", c.Dials())
	}
}

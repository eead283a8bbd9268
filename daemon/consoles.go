package daemon

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/labctl/labctl/sol"
)

// Consoles owns the console session of every node: whoever needs a node's
// console (a job, a health check) acquires it here and releases it when
// done, and nobody else opens one, because a BMC allows one SOL session at
// a time and a second one would take the console away from the first.
//
// Today a session is opened when its first user acquires it and closed
// when its last user releases it. The console broker (issue 5) keeps the
// same entry point and changes the policy: sessions stay open between
// users, every node's output is logged continuously, and people attach as
// viewers (Subscribe) or as the one writer (Claim).
type Consoles struct {
	log *slog.Logger

	mu       sync.Mutex
	sessions map[string]*consoleEntry // by device name
}

// consoleEntry is one node's session and who holds it.
type consoleEntry struct {
	s     *sol.Session
	users int
	// opened is closed once the first user's Open returned; err is its
	// result (nil: the session works).
	opened chan struct{}
	err    error
}

// NewConsoles returns an empty registry.
func NewConsoles(log *slog.Logger) *Consoles {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Consoles{log: log, sessions: map[string]*consoleEntry{}}
}

// Acquire returns the node's console session, opened with dialer if nobody
// holds it yet (waiting at most openTimeout, or until ctx ends). The caller
// must call release exactly once when done with it.
//
// When the console cannot be opened, Acquire still returns the session
// (its Err says what went wrong, which a job records as its infrastructure
// error) together with that error.
func (c *Consoles) Acquire(ctx context.Context, name string, dialer sol.Dialer, openTimeout time.Duration) (s *sol.Session, release func(), err error) {
	c.mu.Lock()
	e := c.sessions[name]
	if e == nil {
		e = &consoleEntry{
			s:      sol.NewSession(dialer, sol.Options{Log: c.log.With("device", name)}),
			opened: make(chan struct{}),
		}
		c.sessions[name] = e
		e.users++
		c.mu.Unlock()
		octx, cancel := context.WithTimeout(ctx, openTimeout)
		e.err = e.s.Open(octx)
		cancel()
		close(e.opened)
	} else {
		e.users++
		c.mu.Unlock()
		select {
		case <-e.opened:
		case <-ctx.Done():
		}
	}
	var once sync.Once
	release = func() { once.Do(func() { c.release(name, e) }) }
	select {
	case <-e.opened:
		err := e.err
		if err == nil {
			err = e.s.Err()
		}
		return e.s, release, err
	default:
		return e.s, release, context.Cause(ctx)
	}
}

// release drops one user; the last one closes the session.
func (c *Consoles) release(name string, e *consoleEntry) {
	c.mu.Lock()
	e.users--
	last := e.users == 0
	if last && c.sessions[name] == e {
		delete(c.sessions, name)
	}
	c.mu.Unlock()
	if last {
		<-e.opened
		if err := e.s.Close(); err != nil {
			c.log.Warn("close console", "device", name, "err", err)
		}
	}
}

// Open reports how many nodes' consoles are open now.
func (c *Consoles) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}

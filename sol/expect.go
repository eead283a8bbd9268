package sol

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// tailLen is how much recent output an Expect error shows.
const tailLen = 200

// Expect waits until one of the patterns matches the console output received
// since the previous match, and consumes the output up to the end of the
// match: the next Expect starts after it. The earliest match in the output
// wins; on a tie, the first pattern. ctx carries the timeout: every wait
// should have one.
//
// Patterns see normalised text, not raw bytes: ANSI/VT100 escape sequences
// are removed, every line end (CR LF, lone CR, LF) is "\n", other control
// bytes are dropped. The transcript keeps the raw bytes. A pattern may span
// lines ("\n", or (?s) for "."); use (?m) for ^ and $ at line boundaries, and
// capture groups for values: Match.Groups. Text still arriving can match
// early (`rc=(\d+)` matches "rc=1" of "rc=12"), so end patterns with what
// follows the value, e.g. `rc=(\d+)\n`.
//
// Kernel messages that start in the middle of a line are moved in front of
// that line once complete (timestamped printk only), so "mas[ 1.2] eth0
// up\nter# " matches "master# " and still shows the kernel line; see
// matchBuffer for what is and is not repaired.
//
// Output is kept while nobody waits, up to Options.MatchBuffer bytes (the
// oldest is dropped beyond). Expect keeps waiting while the session
// reconnects. It fails when ctx ends (the error says what it waited for,
// for how long, and shows the last 200 characters seen; it wraps ctx.Err()),
// or when the session has failed or been closed.
func (s *Session) Expect(ctx context.Context, patterns ...*regexp.Regexp) (Match, error) {
	if len(patterns) == 0 {
		return Match{}, errors.New("console expect: no patterns given")
	}
	s.expectMu.Lock()
	defer s.expectMu.Unlock()
	start := time.Now()
	for {
		s.mu.Lock()
		if m, ok := s.mb.match(patterns); ok {
			s.mu.Unlock()
			return m, nil
		}
		if s.err != nil {
			err, tail := s.err, s.mb.tail(tailLen)
			s.mu.Unlock()
			return Match{}, fmt.Errorf("waiting for %s: %w; last output: %q", describePatterns(patterns), err, tail)
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			s.mu.Lock()
			tail := s.mb.tail(tailLen)
			s.mu.Unlock()
			return Match{}, fmt.Errorf("console %s: waited %s for %s: %w; last output: %q",
				s.Target(), since(start), describePatterns(patterns), ctx.Err(), tail)
		}
	}
}

func describePatterns(patterns []*regexp.Regexp) string {
	parts := make([]string, len(patterns))
	for i, re := range patterns {
		parts[i] = fmt.Sprintf("%q", re.String())
	}
	return strings.Join(parts, " or ")
}

// Discard consumes all output received so far: the next Expect only sees
// what arrives after this call (e.g. before a power cycle, so that the old
// prompt cannot match).
func (s *Session) Discard() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mb.discard()
}

package dispatcher

import (
	"testing"
	"time"

	"github.com/labctl/labctl/sol"
)

// After each lost character typing slows down one step: a window of
// characters becomes one at a time, then the least gap between characters
// widens up to its limit, then the fixed delay takes over; meanwhile the
// echo timeout doubles up to its limit, and a longer one is kept.
func TestSlowDown(t *testing.T) {
	p := sol.Pacing{Mode: sol.Echo, StrictEcho: true, Window: 4, Delay: 5 * time.Millisecond, EchoTimeout: 250 * time.Millisecond}
	var steps []string
	for range 9 {
		slowDown(&p)
		steps = append(steps, paceString(p))
	}
	want := []string{
		"one character at a time, each echo awaited up to 500ms",
		"waiting up to 1s for each echo and at least 5ms between characters",
		"waiting up to 2s for each echo and at least 10ms between characters",
		"waiting up to 2s for each echo and at least 20ms between characters",
		"waiting up to 2s for each echo and at least 40ms between characters",
		"waiting up to 2s for each echo and at least 80ms between characters",
		"waiting up to 2s for each echo and at least 160ms between characters",
		"160ms per character",
		"160ms per character",
	}
	for i := range want {
		if steps[i] != want[i] {
			t.Errorf("after %d losses: %q, want %q", i+1, steps[i], want[i])
		}
	}
	if p.Mode != sol.Fixed || p.StrictEcho {
		t.Errorf("at the end: %+v, want fixed pacing without strict echo", p)
	}
	long := sol.Pacing{Mode: sol.Echo, StrictEcho: true, EchoTimeout: 5 * time.Second}
	slowDown(&long)
	if long.EchoTimeout != 5*time.Second {
		t.Errorf("a device's 5s echo timeout became %s", long.EchoTimeout)
	}
}

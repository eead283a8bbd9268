package simlab

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// LossyConsole makes the node's console drop typed characters the way weak
// BMCs and slow serial consoles do. It applies to console input (bytes a SOL
// client types, on their way to the machine's serial port); output is never
// dropped. Every field is off when zero.
type LossyConsole struct {
	// MaxUnechoed drops an input byte that arrives while more than
	// MaxUnechoed earlier input bytes have not been echoed yet (every byte of
	// console output counts as one echoed byte). 0 disables the check.
	MaxUnechoed int `json:"max_unechoed,omitempty"`
	// MinGap drops an input byte that arrives less than MinGap after the
	// previous accepted input byte (a receiver that takes one byte per
	// MinGap). 0 disables the check.
	MinGap Duration `json:"min_gap,omitempty"`
	// BurstBytes closes the SOL session, as weak BMCs do, when more than
	// BurstBytes input bytes arrive within BurstWindow: the byte over the
	// limit and all input until the session is closed are dropped, and the
	// SOL client is told the session ended (see Node.KillSOL). 0 disables
	// the check.
	BurstBytes int `json:"burst_bytes,omitempty"`
	// BurstWindow is the window of BurstBytes (default 100 ms).
	BurstWindow Duration `json:"burst_window,omitempty"`
}

// Enabled reports whether any check of l is on.
func (l LossyConsole) Enabled() bool {
	return l.MaxUnechoed > 0 || l.MinGap > 0 || l.BurstBytes > 0
}

// Validate rejects negative settings.
func (l LossyConsole) Validate() error {
	switch {
	case l.MaxUnechoed < 0:
		return fmt.Errorf("lossy console: max_unechoed %d is negative", l.MaxUnechoed)
	case l.MinGap < 0:
		return fmt.Errorf("lossy console: min_gap %s is negative", l.MinGap)
	case l.BurstBytes < 0:
		return fmt.Errorf("lossy console: burst_bytes %d is negative", l.BurstBytes)
	case l.BurstWindow < 0:
		return fmt.Errorf("lossy console: burst_window %s is negative", l.BurstWindow)
	}
	return nil
}

func (l LossyConsole) String() string {
	if !l.Enabled() {
		return "off"
	}
	var parts []string
	if l.MaxUnechoed > 0 {
		parts = append(parts, fmt.Sprintf("max_unechoed=%d", l.MaxUnechoed))
	}
	if l.MinGap > 0 {
		parts = append(parts, "min_gap="+l.MinGap.String())
	}
	if l.BurstBytes > 0 {
		parts = append(parts, fmt.Sprintf("burst_bytes=%d burst_window=%s", l.BurstBytes, l.burstWindow()))
	}
	return strings.Join(parts, " ")
}

func (l LossyConsole) burstWindow() Duration {
	if l.BurstWindow > 0 {
		return l.BurstWindow
	}
	return Duration(100 * time.Millisecond)
}

// FaultCounters count what the fault knobs did, since the node started.
// Tests use them to assert "no character lost" (all input counters zero).
type FaultCounters struct {
	// DroppedUnechoed, DroppedGap and DroppedBurst are input bytes dropped
	// by the MaxUnechoed, MinGap and BurstBytes checks.
	DroppedUnechoed int64 `json:"dropped_unechoed"`
	DroppedGap      int64 `json:"dropped_gap"`
	DroppedBurst    int64 `json:"dropped_burst"`
	// InputBytes counts input bytes that reached the machine's serial port;
	// InputWhileOff counts input bytes typed while the machine was off.
	InputBytes    int64 `json:"input_bytes"`
	InputWhileOff int64 `json:"input_while_off"`
	// OutputBytes counts console output bytes.
	OutputBytes int64 `json:"output_bytes"`
	// SOLKills counts SOL sessions ended by the BMC (KillSOL or a burst).
	SOLKills int64 `json:"sol_kills"`
	// SilencedPackets counts IPMI datagrams dropped while the BMC was silent.
	SilencedPackets int64 `json:"silenced_packets"`
}

// DroppedInput is the total of input bytes dropped by the lossy console.
func (c FaultCounters) DroppedInput() int64 {
	return c.DroppedUnechoed + c.DroppedGap + c.DroppedBurst
}

// Duration is a time.Duration that reads and writes as "5ms" in JSON.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string such as "150ms".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads "150ms" (or a number of nanoseconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration: want a string such as \"10ms\": %w", err)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// inputVerdict is what the lossy filter decided for one input byte.
type inputVerdict int

const (
	acceptByte inputVerdict = iota
	dropUnechoed
	dropGap
	dropBurst
	// closeSession: this byte completed a burst; the SOL session is to be
	// closed (the byte itself is dropped).
	closeSession
)

// lossyFilter applies a LossyConsole to the input stream. It is not safe for
// concurrent use; the relay calls it from its input goroutine and feeds
// output counts through echoed under the same lock.
type lossyFilter struct {
	cfg          LossyConsole
	unechoed     int
	lastAccepted time.Time
	burst        []time.Time // arrival times inside the burst window
}

// echoed records n bytes of console output.
func (f *lossyFilter) echoed(n int) {
	f.unechoed -= n
	if f.unechoed < 0 {
		f.unechoed = 0
	}
}

// input decides the fate of one input byte arriving at now.
func (f *lossyFilter) input(now time.Time) inputVerdict {
	c := f.cfg
	if c.BurstBytes > 0 {
		w := time.Duration(c.burstWindow())
		keep := f.burst[:0]
		for _, t := range f.burst {
			if now.Sub(t) < w {
				keep = append(keep, t)
			}
		}
		f.burst = append(keep, now)
		if len(f.burst) > c.BurstBytes {
			f.burst = f.burst[:0]
			return closeSession
		}
	}
	if c.MaxUnechoed > 0 && f.unechoed > c.MaxUnechoed {
		return dropUnechoed
	}
	if c.MinGap > 0 && !f.lastAccepted.IsZero() && now.Sub(f.lastAccepted) < time.Duration(c.MinGap) {
		return dropGap
	}
	f.lastAccepted = now
	f.unechoed++
	return acceptByte
}

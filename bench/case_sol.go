package bench

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/labctl/labctl/sol"
	"github.com/labctl/labctl/sol/soltest"
)

// SOLCase is case 3: typing one command line through a console that
// drops input arriving while more than K bytes are un-echoed, with fixed
// per-character delays (LAVA's way: bootloader_serial_delay_ms) and with
// echo pacing (labctl's: the next character when the previous one is
// back). It runs in-process against sol's fake console (sol/soltest).
type SOLCase struct {
	Rounds int
	Chars  int             // length of the command line
	Fixed  []time.Duration // the fixed delays to compare
	// The console: every byte takes EchoDelay to be taken in and echoed,
	// every SlowEvery-th takes SlowDelay (a busy BMC), and a byte that
	// arrives while more than MaxUnechoed bytes are un-echoed is lost.
	EchoDelay   time.Duration
	SlowEvery   int
	SlowDelay   time.Duration
	MaxUnechoed int
}

type solRun struct {
	dur     time.Duration
	lost    int
	correct bool
	falls   int
	err     error
}

// Run types the line Rounds times with each pacing, all at once (each run
// has its own console; they only sleep, so they do not disturb each other).
func (c SOLCase) Run(ctx context.Context, w, logw io.Writer) (CaseResult, error) {
	res := CaseResult{Name: "3 typing over SOL"}
	cmd := commandLine(c.Chars)
	type mode struct {
		name string
		p    sol.Pacing
	}
	modes := []mode{{"echo", sol.Pacing{Mode: sol.Echo, Delay: c.Fixed[len(c.Fixed)-1], EchoTimeout: time.Second}}}
	for _, d := range c.Fixed {
		modes = append(modes, mode{fmt.Sprintf("fixed %s", d), sol.Pacing{Mode: sol.Fixed, Delay: d}})
	}
	runs := make(map[string][]solRun)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range c.Rounds {
		for _, m := range modes {
			wg.Go(func() {
				r := c.typeOnce(ctx, cmd, m.p)
				mu.Lock()
				runs[m.name] = append(runs[m.name], r)
				mu.Unlock()
				fmt.Fprintf(logw, "  %-12s %6.2fs lost=%d correct=%v err=%v\n", m.name, r.dur.Seconds(), r.lost, r.correct, r.err)
			})
		}
	}
	wg.Wait()
	fmt.Fprintf(w, "### Case 3: typing a %d-character command line over SOL (%d rounds)\n\n", c.Chars, c.Rounds)
	fmt.Fprintf(w, "Console (sol/soltest, in-process): each byte takes %s to echo, every %dth %s (a busy BMC); a byte arriving while more than %d bytes are un-echoed is lost. "+
		"Fixed delays are LAVA's method (its x86 default is 500 ms); echo pacing is labctl's.\n\n", c.EchoDelay, c.SlowEvery, c.SlowDelay, c.MaxUnechoed)
	t := &Table{Head: []string{"pacing", "time s median [min–max]", "chars lost (all rounds)", "line arrived intact", "echo fallbacks"}}
	lossless := time.Duration(0)
	var echoMed float64
	echoLost := 0
	for _, m := range modes {
		var ds []float64
		lost, intact, falls := 0, 0, 0
		for _, r := range runs[m.name] {
			if r.err != nil {
				return res, fmt.Errorf("%s: %w", m.name, r.err)
			}
			ds = append(ds, r.dur.Seconds())
			lost += r.lost
			falls += r.falls
			if r.correct {
				intact++
			}
		}
		t.Add(m.name, Summarize(ds).Format(2), fmt.Sprint(lost), fmt.Sprintf("%d of %d", intact, len(runs[m.name])), fmt.Sprint(falls))
		if m.p.Mode == sol.Echo {
			echoMed, echoLost = Median(ds), lost
		} else if lost == 0 && intact == len(runs[m.name]) && lossless == 0 {
			lossless = m.p.Delay
		}
	}
	t.Write(w)
	if lossless == 0 {
		res.Ratio = fmt.Sprintf("case 3 (SOL typing): no fixed delay of %v typed the line without loss; echo pacing: %.2fs, %d lost", c.Fixed, echoMed, echoLost)
		res.Leads = echoLost == 0
	} else {
		fixedMed := Median(durations(runs[fmt.Sprintf("fixed %s", lossless)]))
		res.Ratio = fmt.Sprintf("case 3 (SOL typing): echo pacing %.2fs vs the smallest lossless fixed delay (%s) %.1fs: %.1fx faster, %d lost (target >= 5x, 0 lost)",
			echoMed, lossless, fixedMed, fixedMed/echoMed, echoLost)
		res.Leads = echoLost == 0 && fixedMed/echoMed >= 5
	}
	fmt.Fprintf(w, "**ratio:** %s\n\n", res.Ratio)
	return res, nil
}

func durations(rs []solRun) []float64 {
	var out []float64
	for _, r := range rs {
		out = append(out, r.dur.Seconds())
	}
	return out
}

// commandLine is an n-character shell command the fake shell echoes.
func commandLine(n int) string {
	var b strings.Builder
	b.WriteString("echo ")
	for i := 0; b.Len() < n; i++ {
		b.WriteByte("abcdefghijklmnopqrstuvwxyz0123456789-"[i%37])
	}
	return b.String()
}

// typeOnce types cmd and Enter on a fresh console and reports how long it
// took, how many bytes the console dropped, and whether the shell got the
// line intact.
func (c SOLCase) typeOnce(ctx context.Context, cmd string, p sol.Pacing) solRun {
	con := soltest.New(soltest.Config{Name: "bench console", EchoDelay: c.EchoDelay, SlowEvery: c.SlowEvery, SlowDelay: c.SlowDelay,
		Lossy: true, MaxUnechoed: c.MaxUnechoed})
	defer con.Close()
	s := sol.NewSession(con, sol.Options{})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := s.Open(ctx); err != nil {
		return solRun{err: err}
	}
	defer s.Close()
	con.Prompt()
	if _, err := s.Expect(ctx, regexp.MustCompile(`fake# `)); err != nil {
		return solRun{err: err}
	}
	wr, err := s.Claim("bench", false)
	if err != nil {
		return solRun{err: err}
	}
	defer wr.Release()
	rep, err := wr.Type(ctx, cmd+"\r", p)
	if err != nil {
		return solRun{err: err}
	}
	ectx, ecancel := context.WithTimeout(ctx, 3*time.Second)
	defer ecancel()
	if _, err := s.Expect(ectx, regexp.MustCompile(`\nfake# `)); err != nil {
		// The Enter itself was lost: end the line slowly to see what the
		// shell got.
		time.Sleep(2 * c.SlowDelay)
		wr.Write([]byte("\r"))
		e2, c2 := context.WithTimeout(ctx, 5*time.Second)
		defer c2()
		s.Expect(e2, regexp.MustCompile(`\nfake# `))
	}
	lines := con.Lines()
	return solRun{dur: rep.Duration, lost: con.Dropped(), correct: len(lines) == 1 && lines[0] == cmd, falls: rep.EchoFallbacks}
}

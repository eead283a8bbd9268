package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labctl/labctl/sol"
)

// shell drives a POSIX shell (busybox ash on the master, the test OS's
// shell) over the console: it types commands with the given pacing and
// reads each one's exit status back through a marker line.
//
// A command is typed as
//
//	CMD;_lc=$?;echo @@L""C-7-12 $_lc@@
//
// and its end is the output line "@@LC-7-12 0@@": the quotes keep the
// echo of the typed line from matching. The tag (7) is random per job and
// the number (12) counts commands, so output of an earlier command can
// never be taken for a later one. The exit status also stays in $_lc, so
// when the console drops while a command runs and the marker is lost in
// the gap, the shell can be asked for it again.
type shell struct {
	r      *runner
	pacing sol.Pacing
	prompt *regexp.Regexp
	// promptText is the shell's prompt as it prints it.
	promptText string
}

// commandResult is what one command did.
type commandResult struct {
	ExitCode int
	Output   string // what it printed, normalised
	Typing   sol.TypeReport
}

// errConsoleGap is wrapped when the console reconnected during a command.
var errConsoleGap = errors.New("console reconnected")

// setPrompt makes the shell's prompt unique to this job, so that nothing
// the node prints can be taken for it, and waits for it.
func (sh *shell) setPrompt(ctx context.Context) error {
	text := "labctl-" + sh.r.tag + "# "
	// The quotes split the prompt in the typed line, so that its echo does
	// not match.
	line := "PS1='labctl-''" + sh.r.tag + "# '"
	gaps := sh.r.watchGaps()
	defer gaps.stop()
	if _, err := sh.typeLine(ctx, line, gaps); err != nil {
		return fmt.Errorf("set shell prompt: %w", err)
	}
	sh.prompt = regexp.MustCompile(regexp.QuoteMeta(text))
	sh.promptText = text
	if _, err := sh.r.session.Expect(ctx, sh.prompt); err != nil {
		return fmt.Errorf("set shell prompt: %w", err)
	}
	return nil
}

// run types cmd, waits for it to finish and returns its exit status and
// output. ctx bounds the whole command. Errors are infrastructure errors
// (the console, a timeout); a command that fails is not an error.
func (sh *shell) run(ctx context.Context, cmd string) (commandResult, error) {
	r := sh.r
	r.seq++
	id := fmt.Sprintf("%s-%d", r.tag, r.seq)
	typed := fmt.Sprintf(`%s;_lc=$?;echo @@L""C-%s $_lc@@`, cmd, id)
	marker := regexp.MustCompile(`@@LC-` + regexp.QuoteMeta(id) + ` (\d+)@@`)

	var res commandResult
	gaps := r.watchGaps()
	defer gaps.stop()

	rep, err := sh.typeLine(ctx, typed, gaps)
	res.Typing = rep
	if err != nil {
		return res, err
	}
	// Wait for the marker. If the console reconnects meanwhile, the marker
	// may have been printed into the gap: wait for either the marker or the
	// next prompt, and if a prompt comes first after a gap, ask for $_lc
	// again. (A prompt before the marker without a gap is a stale one, e.g.
	// from a nudge: skip it.)
	var before strings.Builder
	hadGap, nudges := false, 0
	for {
		m, err := sh.expectOrGap(ctx, gaps, marker, sh.prompt)
		before.WriteString(m.Before)
		if errors.Is(err, errConsoleGap) {
			hadGap = true
			if nudges++; nudges > 3 {
				// Empty lines pile up as input of a command that reads
				// stdin; after a few, just wait.
				r.event("console reconnected again while %q ran; waiting", short(cmd))
				continue
			}
			r.event("console reconnected while %q ran; nudging the shell for its prompt", short(cmd))
			// An empty line gets a fresh prompt once the command is done.
			if _, err := r.writer.Type(ctx, "\r", sh.pacing); err != nil && ctx.Err() != nil {
				return res, err
			}
			continue
		}
		if err != nil {
			return res, err
		}
		if m.Pattern == 0 {
			res.ExitCode, _ = strconv.Atoi(m.Groups[1])
			break
		}
		if !hadGap {
			continue
		}
		r.event("marker of %q lost in a console gap; asking the shell for the exit status", short(cmd))
		rc, err := sh.lastExitCode(ctx, id, gaps)
		if err != nil {
			return res, err
		}
		res.ExitCode = rc
		res.Output = commandOutput(before.String(), id)
		return res, nil
	}
	res.Output = commandOutput(before.String(), id)
	// The prompt after the marker: the shell is ready for the next line.
	if _, err := sh.expectOrGap(ctx, gaps, sh.prompt); err != nil && !errors.Is(err, errConsoleGap) {
		return res, err
	}
	return res, nil
}

// lastExitCode asks the shell for $_lc after a console gap, and waits for
// the prompt after the answer. It asks again if the console drops once
// more meanwhile.
func (sh *shell) lastExitCode(ctx context.Context, id string, gaps *gapWatch) (int, error) {
	r := sh.r
	marker := regexp.MustCompile(`@@LC-` + regexp.QuoteMeta(id) + `r (\d+)@@`)
	for attempt := 1; ; attempt++ {
		if _, err := sh.typeLine(ctx, `echo @@L""C-`+id+`r $_lc@@`, gaps); err != nil {
			return 0, err
		}
		m, err := sh.expectOrGap(ctx, gaps, marker)
		if errors.Is(err, errConsoleGap) && attempt < 3 {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read exit status after a console gap: %w", err)
		}
		rc, _ := strconv.Atoi(m.Groups[1])
		if _, err := r.session.Expect(ctx, sh.prompt); err != nil {
			return 0, err
		}
		return rc, nil
	}
}

// typeLine types one command line and Enter on the shell.
func (sh *shell) typeLine(ctx context.Context, line string, gaps *gapWatch) (sol.TypeReport, error) {
	return sh.r.typeVerified(ctx, line, &sh.pacing, gaps)
}

// typeVerified types a line and Enter at a prompt that echoes (a shell,
// a login prompt). Two things can leave the node with a wrong line, and
// both are repaired by erasing it (Ctrl-U, which shells and terminals
// take as "kill the line") and typing it again: the console drops while
// typing (the node may hold part of the line), or, with echo pacing, a
// character never echoes (the console lost it: the line is typed again
// with more time between characters, and *pacing keeps that slower pace).
func (r *runner) typeVerified(ctx context.Context, line string, pacing *sol.Pacing, gaps *gapWatch) (sol.TypeReport, error) {
	var total sol.TypeReport
	for attempt := 1; ; attempt++ {
		rep, err := r.writer.Type(ctx, line+"\r", *pacing)
		total = addReports(total, rep)
		if rep.EchoTimeout > pacing.EchoTimeout {
			// Echoes came late, not lost: the lines after this one wait
			// as long from the start, rather than each paying the late
			// wait again.
			pacing.EchoTimeout = max(pacing.EchoTimeout, min(rep.EchoTimeout, maxEchoTimeout))
			r.echoTimeout = max(r.echoTimeout, pacing.EchoTimeout)
		}
		if err == nil {
			return total, nil
		}
		lost := errors.Is(err, sol.ErrNoEcho)
		if lost && ctx.Err() == nil && rep.Chars == utf8.RuneCountInString(line)+1 {
			// Only the Enter's echo is missing: the line was sent whole and
			// the node may already have taken it. ^U and typing it again
			// would type it into whatever came next (seen: a late echo at a
			// login prompt typed the user name into the password prompt).
			// What the caller waits for next (a prompt, a marker) tells.
			r.event("the Enter after %q did not echo in time; going on (what comes next tells whether the node took the line)", short(line))
			return total, nil
		}
		if ctx.Err() != nil || attempt == 8 || !lost && !gaps.seen() {
			return total, fmt.Errorf("type %q: %w", short(line), err)
		}
		if lost {
			slowDown(pacing)
			r.minGap = max(r.minGap, pacing.MinGap)
			r.echoWindow = min(r.echoWindow, max(pacing.Window, 1))
			r.echoTimeout = max(r.echoTimeout, pacing.EchoTimeout)
			r.event("console lost a character (%v); typing the line again, %s", err, paceString(*pacing))
		} else {
			r.event("console dropped while typing (%v); typing the line again", err)
			gaps.reset()
		}
		if _, err := r.writer.Type(ctx, "\x15", sol.Pacing{Mode: sol.Fixed, Delay: 50 * time.Millisecond, Settle: -1}); err != nil {
			return total, fmt.Errorf("type %q: %w", short(line), err)
		}
	}
}

// slowDown slows typing after the console lost a character: first one
// character at a time instead of a window of them, then a least gap
// between characters of 5 ms, doubling up to 4 times the device's fixed
// delay (at least 160 ms); past that the shell types at that pace without
// waiting for echoes. Arrival times at the BMC jitter, so a console that
// needs 20 ms between characters may need 40 ms between sends. Each step
// also doubles the echo timeout, up to maxEchoTimeout: on a busy machine
// an echo that came late looks lost, and waiting the same short time
// again only retypes the line again.
func slowDown(p *sol.Pacing) {
	limit := max(4*p.Delay, 160*time.Millisecond)
	if p.Mode == sol.Echo && p.EchoTimeout < maxEchoTimeout {
		p.EchoTimeout = min(2*max(p.EchoTimeout, time.Millisecond), maxEchoTimeout)
	}
	switch {
	case p.Mode != sol.Echo:
	case p.Window > 1:
		p.Window = 1
	case p.MinGap >= limit:
		p.Mode, p.StrictEcho, p.Delay = sol.Fixed, false, limit
	default:
		p.MinGap = min(max(2*p.MinGap, 5*time.Millisecond), limit)
	}
}

// maxEchoTimeout bounds how long slowDown lets echo pacing wait for an
// echo.
const maxEchoTimeout = 2 * time.Second

func paceString(p sol.Pacing) string {
	if p.Mode == sol.Echo && p.Window > 1 {
		return fmt.Sprintf("up to %d characters on their way, each echo awaited up to %s", p.Window, p.EchoTimeout)
	}
	if p.Mode == sol.Echo && p.MinGap == 0 {
		return fmt.Sprintf("one character at a time, each echo awaited up to %s", p.EchoTimeout)
	}
	if p.Mode == sol.Echo {
		return fmt.Sprintf("waiting up to %s for each echo and at least %s between characters", p.EchoTimeout, p.MinGap)
	}
	return fmt.Sprintf("%s per character", p.Delay)
}

// expectOrGap waits for the patterns like Expect, but returns
// errConsoleGap as soon as the console reconnects.
func (sh *shell) expectOrGap(ctx context.Context, gaps *gapWatch, patterns ...*regexp.Regexp) (sol.Match, error) {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-gaps.reconnected():
			cancel(errConsoleGap)
		case <-wctx.Done():
		}
	}()
	m, err := sh.r.session.Expect(wctx, patterns...)
	if err != nil && errors.Is(context.Cause(wctx), errConsoleGap) && ctx.Err() == nil {
		gaps.reset()
		return m, errConsoleGap
	}
	return m, err
}

// commandOutput is what a command printed: the text before its marker,
// without the echo of the typed line.
func commandOutput(before, id string) string {
	echo := `@@L""C-` + id
	if i := strings.LastIndex(before, echo); i >= 0 {
		before = before[i:]
		if nl := strings.IndexByte(before, '\n'); nl >= 0 {
			before = before[nl+1:]
		} else {
			before = ""
		}
	}
	return before
}

func addReports(a, b sol.TypeReport) sol.TypeReport {
	a.Mode, a.Delay = b.Mode, b.Delay
	a.Chars += b.Chars
	a.Duration += b.Duration
	a.Settled += b.Settled
	a.EchoFallbacks += b.EchoFallbacks
	return a
}

// short shortens a command for messages.
func short(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// gapWatch notices when the console session reconnects.
type gapWatch struct {
	sub  *sol.Subscription
	done chan struct{}

	mu   sync.Mutex
	flag chan struct{} // closed when a reconnect was seen since the last reset
}

// watchGaps starts watching the session for reconnects.
func (r *runner) watchGaps() *gapWatch {
	w := &gapWatch{sub: r.session.Subscribe(64 << 10), done: make(chan struct{}), flag: make(chan struct{})}
	go func() {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-w.done; cancel() }()
		for {
			rec, err := w.sub.Next(ctx)
			if err != nil {
				return
			}
			if rec.Dir == sol.Event && bytes.HasPrefix(rec.Data, []byte("reconnected")) {
				w.mu.Lock()
				select {
				case <-w.flag:
				default:
					close(w.flag)
				}
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *gapWatch) reconnected() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flag
}

func (w *gapWatch) seen() bool {
	select {
	case <-w.reconnected():
		return true
	default:
		return false
	}
}

func (w *gapWatch) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.flag:
		w.flag = make(chan struct{})
	default:
	}
}

func (w *gapWatch) stop() {
	close(w.done)
	w.sub.Close()
}

package console

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/sol"
)

// maxViewers bounds the viewers of one node's console.
const maxViewers = 64

// mergeOutput bounds the output one message carries when a viewer's queue
// holds many small chunks.
const mergeOutput = 32 << 10

// refusalQuiet is how long a repeated refusal ("read-only: ...") stays
// unsaid: a person typing on a read-only console hears it once, not per
// key.
const refusalQuiet = 3 * time.Second

// powerCycleTimeout bounds a power cycle asked for from the console.
const powerCycleTimeout = 5 * time.Minute

// viewer is a person attached to a node's console. It implements
// labctl.ConsoleAttachment: the API carries it to labctl console over the
// network, labctl console --direct uses it in-process.
type viewer struct {
	nc       *nodeConsole
	who      string
	token    string
	role     labctl.Role // the token's
	remote   string      // the address the viewer attached from
	readOnly bool
	since    time.Time
	q        *boundedQueue[labctl.ConsoleMessage]

	// Guarded by nc.mu.
	window    labctl.WindowSize
	closed    bool
	lastState labctl.ConsoleState
	sentState bool
	refused   map[string]time.Time
	hint      *time.Timer // window size hint, sent once resizing settles
}

var _ labctl.ConsoleAttachment = (*viewer)(nil)

// attach attaches the caller in ctx (its token, role and address) to the
// node's console, opening it with dialer if it is not open. The viewer gets the last
// o.Replay lines of output, notices saying what it may do (write, or
// read-only and why), then the console live. It never fails because the
// console is down: the viewer is told, and sees it come back.
func (c *Broker) attach(ctx context.Context, name string, dialer sol.Dialer, o labctl.ConsoleOptions) (*viewer, error) {
	token := labctl.CallerFrom(ctx)
	nc, err := c.node(name, dialer)
	if err != nil {
		return nil, fmt.Errorf("console %s: %w", name, err)
	}
	who := o.Who
	if who == "" {
		who = token
	}
	if who == "" {
		who = "someone"
	}
	v := &viewer{
		nc: nc, who: who, token: token, role: labctl.RoleFrom(ctx), remote: labctl.RemoteFrom(ctx),
		readOnly: o.ReadOnly, since: time.Now(),
		window: o.Window, refused: map[string]time.Time{},
		q: newBoundedQueue(c.cfg.ViewerBuffer,
			func(m labctl.ConsoleMessage) int { return len(m.Output) },
			func(n int64) labctl.ConsoleMessage {
				return labctl.ConsoleMessage{Notice: &labctl.ConsoleNotice{Kind: labctl.NoticeMissed, At: time.Now(), Missed: n,
					Text: fmt.Sprintf("missed %d bytes of console output (this viewer did not keep up)", n)}}
			}),
	}
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if nc.closing {
		return nil, fmt.Errorf("console %s: %w", name, errBrokerClosed)
	}
	if len(nc.viewers) >= maxViewers {
		return nil, fmt.Errorf("%w: console %s has %d viewers already", labctl.ErrBusy, name, len(nc.viewers))
	}
	if replay := stripQueries(nc.ring.last(o.Replay)); len(replay) > 0 {
		v.q.pushAlways(labctl.ConsoleMessage{Output: replay})
	}
	for other := range nc.viewers {
		other.noticeLocked(labctl.NoticeInfo, who+" attached")
	}
	nc.viewers[v] = struct{}{}
	v.noticeLocked(labctl.NoticeInfo, fmt.Sprintf("attached to %s: %s", name, nc.dialer.Target()))
	nc.noteLocked(fmt.Sprintf("%s attached (token %s)", who, token))
	if o.ReadOnly {
		v.noticeLocked(labctl.NoticeInfo, "read-only: attached to watch")
	} else if why := nc.takeWriteLocked(v, o.Force); why != "" {
		v.noticeLocked(labctl.NoticeWriter, why)
	} else if o.Window.Rows > 0 && o.Window.Cols > 0 {
		v.noticeLocked(labctl.NoticeInfo, windowHint(o.Window))
	}
	switch nc.state {
	case labctl.ConsoleDown:
		v.noticeLocked(labctl.NoticeSession, fmt.Sprintf("the console is down (%v); trying again now", nc.err))
	case labctl.ConsoleConnecting:
		v.noticeLocked(labctl.NoticeSession, "the console is connecting")
	}
	nc.startLocked(false)
	nc.broadcastStateLocked()
	return v, nil
}

// windowHint is what a person with write is told about their window.
func windowHint(w labctl.WindowSize) string {
	return fmt.Sprintf("your window is %dx%d; a serial console cannot tell the node: `stty rows %d cols %d` there makes full-screen programs fit",
		w.Cols, w.Rows, w.Rows, w.Cols)
}

// Next implements labctl.ConsoleAttachment.
func (v *viewer) Next(ctx context.Context) (labctl.ConsoleMessage, error) {
	return v.q.next(ctx, mergeMessages)
}

// mergeMessages joins the output chunks at the head of a viewer's queue.
func mergeMessages(items []labctl.ConsoleMessage) (labctl.ConsoleMessage, int) {
	n, size := 0, 0
	for n < len(items) && items[n].Output != nil && (n == 0 || size+len(items[n].Output) <= mergeOutput) {
		size += len(items[n].Output)
		n++
	}
	if n <= 1 {
		return items[0], 1
	}
	out := make([]byte, 0, size)
	for _, m := range items[:n] {
		out = append(out, m.Output...)
	}
	return labctl.ConsoleMessage{Output: out}, n
}

// noticeLocked queues a notice for v.
func (v *viewer) noticeLocked(kind, text string) {
	v.q.push(labctl.ConsoleMessage{Notice: &labctl.ConsoleNotice{Kind: kind, Text: text, At: time.Now()}})
}

// refuseLocked tells v it may not do something, unless it heard the same
// lately.
func (v *viewer) refuseLocked(text string) {
	now := time.Now()
	if now.Sub(v.refused[text]) < refusalQuiet {
		return
	}
	v.refused[text] = now
	v.noticeLocked(labctl.NoticeRefused, text)
}

func (v *viewer) refuse(text string) {
	v.nc.mu.Lock()
	defer v.nc.mu.Unlock()
	v.refuseLocked(text)
}

// stateLocked queues the console's state for v if it changed.
func (v *viewer) stateLocked() {
	st := v.nc.stateForLocked(v)
	if v.sentState && st == v.lastState {
		return
	}
	v.lastState, v.sentState = st, true
	v.q.push(labctl.ConsoleMessage{State: &st})
}

// mayWriteLocked makes sure v has write, taking it if it is free; it
// returns the refusal otherwise.
func (v *viewer) mayWriteLocked() string {
	if v.nc.writer == v && v.nc.holderLocked() == "" {
		return ""
	}
	return v.nc.takeWriteLocked(v, false)
}

// Input implements labctl.ConsoleAttachment.
func (v *viewer) Input(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	nc := v.nc
	nc.mu.Lock()
	if v.closed {
		nc.mu.Unlock()
		return labctl.ErrConsoleClosed
	}
	if nc.writer != v || nc.holderLocked() != "" {
		// A read-only viewer's terminal answering the node's queries is
		// nobody typing.
		if p = dropTerminalReports(p); len(p) == 0 {
			nc.mu.Unlock()
			return nil
		}
	}
	if why := v.mayWriteLocked(); why != "" {
		v.refuseLocked(why)
		nc.mu.Unlock()
		return nil
	}
	pw, state := nc.pw, nc.state
	nc.mu.Unlock()
	if pw == nil {
		v.refuse(fmt.Sprintf("input dropped: the console is %s", state))
		return nil
	}
	if _, err := pw.Write(p); err != nil {
		if errors.Is(err, sol.ErrNotWriter) {
			nc.mu.Lock()
			if nc.pw == pw {
				nc.writer, nc.pw = nil, nil
				nc.broadcastStateLocked()
			}
			nc.mu.Unlock()
		}
		v.refuse(fmt.Sprintf("input not sent: %v", err))
	}
	return nil
}

// Resize implements labctl.ConsoleAttachment. A serial console has no way
// to tell the node a window size, so the broker only records it (for
// listings) and reminds a person with write how to set it on the node.
func (v *viewer) Resize(w labctl.WindowSize) error {
	nc := v.nc
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if v.closed {
		return labctl.ErrConsoleClosed
	}
	if w == v.window {
		return nil
	}
	v.window = w
	if v.hint != nil {
		v.hint.Stop()
	}
	v.hint = time.AfterFunc(time.Second, func() {
		nc.mu.Lock()
		defer nc.mu.Unlock()
		if !v.closed && nc.writer == v && w.Rows > 0 && w.Cols > 0 {
			v.noticeLocked(labctl.NoticeInfo, windowHint(w))
		}
	})
	return nil
}

// Break implements labctl.ConsoleAttachment.
func (v *viewer) Break() error {
	nc := v.nc
	nc.mu.Lock()
	if v.closed {
		nc.mu.Unlock()
		return labctl.ErrConsoleClosed
	}
	if why := v.mayWriteLocked(); why != "" {
		v.refuseLocked("no break: " + why)
		nc.mu.Unlock()
		return nil
	}
	nc.mu.Unlock()
	err := nc.dialer.sendBreak()
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if err != nil {
		v.refuseLocked("break not sent: " + err.Error())
		return nil
	}
	nc.announceLocked(labctl.NoticeAction, v.who+" sent a break")
	return nil
}

// PowerCycle implements labctl.ConsoleAttachment: it starts the cycle and
// returns; everybody watching hears when it starts and how it ended.
func (v *viewer) PowerCycle() error {
	nc := v.nc
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if v.closed {
		return labctl.ErrConsoleClosed
	}
	switch why := v.mayWriteLocked(); {
	case why != "":
		v.refuseLocked("no power cycle: " + why)
		return nil
	case nc.c.cfg.Power == nil:
		v.refuseLocked("no power cycle: not available here")
		return nil
	case nc.cycling:
		v.refuseLocked("no power cycle: one is running")
		return nil
	}
	nc.cycling = true
	msg := v.who + " is power-cycling " + nc.name
	nc.announceLocked(labctl.NoticeAction, msg)
	go func() {
		ctx, cancel := context.WithTimeout(nc.c.ctx, powerCycleTimeout)
		_, err := nc.c.cfg.Power.Power(v.as(ctx, v.who+" (console)"), nc.name, labctl.PowerRequest{Op: string(labctl.PowerCycle)})
		cancel()
		nc.mu.Lock()
		defer nc.mu.Unlock()
		nc.cycling = false
		msg := "power cycle of " + nc.name + " done"
		if err != nil {
			msg = "power cycle of " + nc.name + " failed: " + err.Error()
		}
		nc.announceLocked(labctl.NoticeAction, msg)
	}()
	return nil
}

// Close implements labctl.ConsoleAttachment: the viewer detaches; write, if
// it had it, is free again. A console that nobody wants any more is closed
// before Close returns.
func (v *viewer) Close() error {
	nc := v.nc
	nc.mu.Lock()
	if v.closed {
		nc.mu.Unlock()
		return nil
	}
	v.closed = true
	if v.hint != nil {
		v.hint.Stop()
	}
	delete(nc.viewers, v)
	nc.noteLocked(v.who + " detached")
	if nc.writer == v {
		nc.dropWriterLocked()
		nc.broadcastLocked(labctl.NoticeWriter, v.who+" detached: write is free (type to take it)")
	} else {
		nc.broadcastLocked(labctl.NoticeInfo, v.who+" detached")
	}
	nc.broadcastStateLocked()
	nc.mu.Unlock()
	v.q.finish(labctl.ErrConsoleClosed, true)
	nc.stopIfUnwanted()
	return nil
}

// endLocked ends the attachment from the broker's side, after telling the
// viewer why.
func (v *viewer) endLocked(why string) {
	if v.closed {
		return
	}
	v.noticeLocked(labctl.NoticeClosed, why)
	v.closed = true
	if v.hint != nil {
		v.hint.Stop()
	}
	delete(v.nc.viewers, v)
	if v.nc.writer == v {
		v.nc.dropWriterLocked()
	}
	v.q.finish(labctl.ErrConsoleClosed, false)
}

// as returns ctx carrying caller as the caller, with v's role and address.
func (v *viewer) as(ctx context.Context, caller string) context.Context {
	return labctl.WithRemote(labctl.WithRole(labctl.WithCaller(ctx, caller), v.role), v.remote)
}

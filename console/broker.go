// Package console is the console broker: it owns every node's serial
// console session (package sol) so that jobs, health checks and people
// share it. The daemon keeps one for the lab; labctl run and labctl
// console --direct make their own for one node.
package console

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/sol"
)

// Broker owns the console session of every node. Whoever needs a node's
// console (a job, a health check, labctl run) acquires it here and
// releases it when done, people attach to it as viewers (AttachConsole),
// and nobody else opens one: a BMC allows one SOL session at a time, and a
// second one would take the console away from the first.
//
// A node's session is opened by its first user. With Keep (the daemon) it
// then stays open: everything the node prints goes to the node's console
// log, between jobs too, so the log holds every boot whether or not
// anybody watched. A session that gives up reconnecting (the BMC gone for
// minutes) is opened again with backoff (RetryMin doubling to RetryMax),
// sooner when someone needs it. A node parked for maintenance lets its
// session go once nobody uses it (an admin may want the BMC's SOL for
// other tools); Close (the daemon stopping) ends every session. Without
// Keep (labctl run, console --direct) a session ends with its last user.
//
// One writer at a time: a job or health check holding the console is its
// writer and people only watch; otherwise the first person to attach (or
// to type once write is free) gets write, and another takes it with
// force, which the first is told. Viewers read through bounded queues: a
// stuck one loses output (and is told how much), never slows the session.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	names  []string        // the lab's devices, sorted
	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // node loops

	mu     sync.Mutex
	nodes  map[string]*nodeConsole // by device name
	parked map[string]bool         // nodes in maintenance
	closed bool
}

// Config is what a Broker is made of. The zero value is labctl run's
// broker: sessions live as long as their users, no console logs, nobody
// attaches.
type Config struct {
	// Lab and Nodes are the nodes people attach to (AttachConsole) and
	// that Consoles lists: the broker opens a node's Console. Both or
	// neither: without them nobody attaches.
	Lab   *devices.Lab
	Nodes labctl.Nodes
	// Power power-cycles a node when its writer asks at the console (~R),
	// with "WHO (console)" as the caller in ctx; it applies its own rules
	// (the daemon refuses while a job or a health check owns the node).
	// nil refuses ~R.
	Power labctl.NodeControl
	// WriteTaken, if set, hears that a person took write on a node's
	// console: ctx carries the viewer's token, role and address
	// (labctl.CallerFrom, RoleFrom, RemoteFrom), who is the viewer as
	// others see it, from is the person write was taken from with force
	// ("" if write was free). It is called with the console locked: it
	// must return at once and not call the broker.
	WriteTaken func(ctx context.Context, node, who, from string)
	Log        *slog.Logger
	// Keep keeps a node's session open once opened (see Broker).
	Keep bool
	// LogDir, if set, gets each node's console log at
	// LogDir/NAME/console.log.
	LogDir string
	// LogMaxBytes is the size at which a console log is rotated; 0 means
	// 16 MiB. LogFiles is how many rotated files are kept (console.log.1
	// is the newest); 0 means 3.
	LogMaxBytes int64
	LogFiles    int
	// ReplayLines and ReplayBytes bound the recent output kept for
	// replay on attach; 0 means 1000 lines and 256 KiB.
	ReplayLines, ReplayBytes int
	// ViewerBuffer bounds each viewer's queue of output in bytes; 0 means
	// 256 KiB (about 20 s of a 115200 baud console at full speed).
	ViewerBuffer int
	// OpenTimeout bounds one attempt to open a session (the session
	// retries within it); 0 means 1 minute.
	OpenTimeout time.Duration
	// RetryMin and RetryMax bound the wait before opening a session again
	// after an attempt failed or the session gave up; 0 means 5 s and
	// 5 min.
	RetryMin, RetryMax time.Duration
	// Session is the template of every session's options (GiveUpAfter,
	// backoff, DialTimeout); Log and Transcript are set by the broker.
	Session sol.Options
	// SessionChanged, if set, hears a node's session drop, come back or
	// be given up on (sol.Options.OnChange, with the node's name).
	SessionChanged func(node string, c sol.SessionChange)
}

func (o Config) withDefaults() Config {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.LogMaxBytes <= 0 {
		o.LogMaxBytes = 16 << 20
	}
	if o.LogFiles <= 0 {
		o.LogFiles = 3
	}
	if o.ReplayLines <= 0 {
		o.ReplayLines = 1000
	}
	if o.ReplayBytes <= 0 {
		o.ReplayBytes = 256 << 10
	}
	if o.ViewerBuffer <= 0 {
		o.ViewerBuffer = 256 << 10
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = time.Minute
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 5 * time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Minute
	}
	o.RetryMax = max(o.RetryMax, o.RetryMin)
	return o
}

// New returns a broker made of cfg. Close it when done.
func New(cfg Config) *Broker {
	cfg = cfg.withDefaults()
	var names []string
	if cfg.Lab != nil && cfg.Nodes != nil {
		for _, d := range cfg.Lab.Devices {
			names = append(names, d.Name)
		}
		slices.Sort(names)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Broker{cfg: cfg, log: cfg.Log, names: names, ctx: ctx, cancel: cancel,
		nodes: map[string]*nodeConsole{}, parked: map[string]bool{}}
}

// errBrokerClosed is the error of a broker that was closed.
var errBrokerClosed = fmt.Errorf("%w: the console broker stopped", labctl.ErrUnavailable)

// node returns the node's entry, made with dialer if it is new.
func (c *Broker) node(name string, dialer sol.Dialer) (*nodeConsole, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errBrokerClosed
	}
	nc := c.nodes[name]
	if nc == nil {
		nc = &nodeConsole{
			c: c, name: name, log: c.log.With("device", name),
			dialer:  wrapDialer(dialer),
			state:   labctl.ConsoleClosed,
			since:   time.Now(),
			changed: make(chan struct{}),
			kick:    make(chan struct{}, 1),
			viewers: map[*viewer]struct{}{},
			ring:    replayRing{maxLines: c.cfg.ReplayLines, maxBytes: c.cfg.ReplayBytes},
			parked:  c.parked[name],
		}
		if c.cfg.LogDir != "" {
			nc.clog = openConsoleLog(filepath.Join(c.cfg.LogDir, name, "console.log"), c.cfg.LogMaxBytes, c.cfg.LogFiles, nc.log)
		}
		c.nodes[name] = nc
	}
	return nc, nil
}

// lookup returns the node's entry if it has one.
func (c *Broker) lookup(name string) *nodeConsole {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[name]
}

// Acquire returns the node's console session, opening it with dialer if it
// is not open, and waits for it to be open (at most openTimeout, or until
// ctx ends). The caller must call release exactly once when done with it;
// it must not close the session.
//
// When the console cannot be opened, Acquire still returns a session (its
// Err says what went wrong, which a job records as its infrastructure
// error) together with that error.
func (c *Broker) Acquire(ctx context.Context, name string, dialer sol.Dialer, openTimeout time.Duration) (s *sol.Session, release func(), err error) {
	return c.AcquireFor(ctx, name, "", dialer, openTimeout)
}

// AcquireFor is Acquire for a named holder ("job 42", "health check"),
// which becomes the console's writer for people's purposes: a person with
// write is made read-only (and told), and people cannot take write until
// the holder releases the console.
//
// A named holder gets a session known to work: an open one is kept if
// its far end vouches for it (native SOL: the BMC says the payload is
// active on it), else closed and opened again. A session kept open
// across a BMC outage can be half dead (simlab's ipmi_sim stops sending
// SOL data to an ipmitool whose packets it lost, and ipmitool takes
// minutes to notice), and a connection command cannot be asked; the start
// of a job, whose node is about to be powered off anyway, is the moment
// to start clean. Reopening costs a session set-up with the BMC per job,
// seconds on BMCs that hold a closed SOL session for a while.
func (c *Broker) AcquireFor(ctx context.Context, name, holder string, dialer sol.Dialer, openTimeout time.Duration) (s *sol.Session, release func(), err error) {
	nc, err := c.node(name, dialer)
	if err != nil {
		s := sol.NewSession(dialer, sol.Options{})
		s.Close()
		return s, func() {}, fmt.Errorf("console %s: %w", name, err)
	}
	fresh := holder != "" && !nc.vouchedFor(ctx, holder)
	nc.mu.Lock()
	nc.holders = append(nc.holders, holder)
	if holder != "" {
		nc.holderStartedLocked(holder)
	}
	min := nc.startLocked(fresh)
	nc.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { nc.release(holder) }) }
	s, err = nc.waitOpen(ctx, openTimeout, min)
	return s, release, err
}

// checkTimeout bounds the check of an open session (AcquireFor): a BMC
// that does not answer by then gets a new session.
const checkTimeout = 3 * time.Second

// vouchedFor says whether the node's open session may be kept for holder:
// it is open and its stream's far end says it works. A failed check is
// logged; a stream that cannot be asked (a connection command) is not.
func (nc *nodeConsole) vouchedFor(ctx context.Context, holder string) bool {
	nc.mu.Lock()
	open := nc.state == labctl.ConsoleOpen && !nc.opening && !nc.fresh && !nc.closing
	nc.mu.Unlock()
	if !open {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	err := nc.dialer.check(ctx)
	nc.mu.Lock()
	defer nc.mu.Unlock()
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		return false
	case err != nil:
		nc.log.Info("console: the open session failed its check; a new one for "+holder, "err", err)
		return false
	}
	nc.noteLocked("the session stays for " + holder + ": its far end says it works")
	return true
}

// Ensure opens the node's console if it is not open (e.g. before the node
// is powered on, so that its boot is logged) and waits up to wait for it.
func (c *Broker) Ensure(ctx context.Context, name string, dialer sol.Dialer, wait time.Duration) error {
	nc, err := c.node(name, dialer)
	if err != nil {
		return err
	}
	nc.mu.Lock()
	min := nc.startLocked(false)
	nc.mu.Unlock()
	_, err = nc.waitOpen(ctx, wait, min)
	return err
}

// Park marks a node as in maintenance (or back in service): a parked
// node's session is closed once no job, health check or viewer uses it,
// and is not kept open after that.
func (c *Broker) Park(name string, parked bool) {
	c.mu.Lock()
	c.parked[name] = parked
	nc := c.nodes[name]
	c.mu.Unlock()
	if nc == nil {
		return
	}
	nc.mu.Lock()
	nc.parked = parked
	nc.wakeLocked()
	nc.mu.Unlock()
}

// Info reports a node's console; a node whose console was never used is
// closed.
func (c *Broker) Info(name string) labctl.ConsoleInfo {
	nc := c.lookup(name)
	if nc == nil {
		info := labctl.ConsoleInfo{Node: name, State: labctl.ConsoleClosed, Viewers: []labctl.ConsoleViewer{}}
		if c.cfg.LogDir != "" {
			info.Log = filepath.Join(c.cfg.LogDir, name, "console.log")
		}
		return info
	}
	return nc.info()
}

// Open reports how many nodes' consoles are open now.
func (c *Broker) Open() int {
	c.mu.Lock()
	nodes := make([]*nodeConsole, 0, len(c.nodes))
	for _, nc := range c.nodes {
		nodes = append(nodes, nc)
	}
	c.mu.Unlock()
	n := 0
	for _, nc := range nodes {
		nc.mu.Lock()
		if nc.state == labctl.ConsoleOpen {
			n++
		}
		nc.mu.Unlock()
	}
	return n
}

// Close ends every session and attachment (viewers are told why) and
// flushes the console logs. Sessions still acquired by someone are closed
// under them. It is idempotent.
func (c *Broker) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	nodes := make([]*nodeConsole, 0, len(c.nodes))
	for _, nc := range c.nodes {
		nodes = append(nodes, nc)
	}
	c.mu.Unlock()
	for _, nc := range nodes {
		nc.mu.Lock()
		nc.closing = true
		for v := range nc.viewers {
			v.endLocked("the console broker stopped (the daemon is stopping)")
		}
		nc.wakeLocked()
		nc.mu.Unlock()
	}
	c.cancel()
	c.wg.Wait()
	for _, nc := range nodes {
		nc.clog.close()
	}
	return nil
}

// nodeConsole is one node's console in the broker. Its loop goroutine
// owns the session's life: open (retrying with backoff), pump the
// session's records to the log, the replay ring and the viewers, and open
// again when the session gives up, for as long as the console is wanted.
type nodeConsole struct {
	c      *Broker
	name   string
	log    *slog.Logger
	dialer *brokerDialer
	clog   *consoleLog // nil without a log directory

	mu      sync.Mutex
	session *sol.Session // the current session (or the last one, if down); nil before the first
	attempt int          // counts sessions made
	state   string       // labctl.Console*
	err     error        // why it is down
	since   time.Time    // of state
	changed chan struct{}
	kick    chan struct{} // wakes the loop: retry now, or check whether still wanted
	running bool          // the loop runs
	opening bool          // the current session is being opened (never open yet)
	fresh   bool          // a new session is asked for
	closing bool          // the broker is closing
	parked  bool
	holders []string // acquirers, "" for anonymous ones
	viewers map[*viewer]struct{}
	writer  *viewer     // the person with write, if any
	pw      *sol.Writer // the writer's claim on the session
	ring    replayRing
	cycling bool // a power cycle asked from the console runs
}

// wantedLocked says whether the session should be open.
func (nc *nodeConsole) wantedLocked() bool {
	if nc.closing {
		return false
	}
	return len(nc.holders) > 0 || len(nc.viewers) > 0 || (nc.c.cfg.Keep && !nc.parked)
}

// startLocked starts the loop if it does not run, else makes a down
// console try again now, and with fresh an open one start again. It
// returns the first session (nc.attempt) that counts for the caller.
func (nc *nodeConsole) startLocked(fresh bool) int {
	if nc.closing {
		return nc.attempt
	}
	if !nc.running {
		nc.running = true
		s := nc.newSessionLocked()
		nc.c.wg.Add(1)
		go nc.loop(s)
		return nc.attempt
	}
	switch {
	case nc.state == labctl.ConsoleDown:
		nc.wakeLocked()
		return nc.attempt + 1
	case fresh && !nc.opening:
		nc.fresh = true
		nc.wakeLocked()
		return nc.attempt + 1
	}
	return nc.attempt
}

func (nc *nodeConsole) wakeLocked() {
	select {
	case nc.kick <- struct{}{}:
	default:
	}
}

// newSessionLocked makes the next session and shows it as connecting.
func (nc *nodeConsole) newSessionLocked() *sol.Session {
	o := nc.c.cfg.Session
	o.Log, o.Transcript = nc.log, nil
	if changed := nc.c.cfg.SessionChanged; changed != nil {
		name := nc.name
		o.OnChange = func(c sol.SessionChange) { changed(name, c) }
	}
	s := sol.NewSession(nc.dialer, o)
	nc.session = s
	nc.pw = nil
	nc.attempt++
	nc.opening = true
	nc.setStateLocked(labctl.ConsoleConnecting, nil)
	return s
}

// setStateLocked records a state change and tells waiters and viewers.
func (nc *nodeConsole) setStateLocked(state string, err error) {
	if state != nc.state {
		nc.since = time.Now()
	}
	nc.state, nc.err = state, err
	close(nc.changed)
	nc.changed = make(chan struct{})
	nc.broadcastStateLocked()
}

// loop runs the node's sessions, starting with s, while the console is
// wanted.
func (nc *nodeConsole) loop(s *sol.Session) {
	defer nc.c.wg.Done()
	backoff := nc.c.cfg.RetryMin
	for {
		sub := s.Subscribe(16 << 20)
		pumped := make(chan struct{})
		go func() {
			defer close(pumped)
			nc.pump(sub)
		}()
		err := nc.open(s)
		nc.mu.Lock()
		nc.opening = false
		if err == nil {
			nc.setStateLocked(labctl.ConsoleOpen, nil)
			nc.claimForWriterLocked()
		}
		nc.mu.Unlock()
		if err == nil {
			backoff = nc.c.cfg.RetryMin
			nc.runSession(pumped)
		}
		failed := s.Err()
		if err != nil {
			failed = err
		}
		s.Close()
		<-pumped

		nc.mu.Lock()
		if !nc.wantedLocked() {
			nc.setStateLocked(labctl.ConsoleClosed, nil)
			nc.running = false
			nc.mu.Unlock()
			return
		}
		if nc.closing || nc.c.ctx.Err() != nil {
			nc.running = false
			nc.mu.Unlock()
			return
		}
		if nc.fresh {
			nc.fresh = false
			nc.noteLocked("a new session for " + nc.holderLocked())
			s = nc.newSessionLocked()
			nc.mu.Unlock()
			continue
		}
		wait := backoff
		backoff = min(backoff*2, nc.c.cfg.RetryMax)
		msg := fmt.Sprintf("console down: %v; next try in %s", failed, wait)
		nc.setStateLocked(labctl.ConsoleDown, failed)
		nc.announceLocked(labctl.NoticeSession, msg)
		nc.log.Warn("console down", "err", failed, "retry_in", wait)
		// Drain an old kick: only one that comes while waiting counts.
		select {
		case <-nc.kick:
		default:
		}
		nc.mu.Unlock()

		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-nc.kick:
		case <-nc.c.ctx.Done():
		}
		t.Stop()
		nc.mu.Lock()
		if !nc.wantedLocked() {
			nc.setStateLocked(labctl.ConsoleClosed, nil)
			nc.running = false
			nc.mu.Unlock()
			return
		}
		s = nc.newSessionLocked()
		nc.mu.Unlock()
	}
}

// open opens s, giving up when the console is no longer wanted (its last
// user left while it was still trying).
func (nc *nodeConsole) open(s *sol.Session) error {
	ctx, cancel := context.WithTimeout(nc.c.ctx, nc.c.cfg.OpenTimeout)
	defer cancel()
	opening := make(chan struct{})
	defer close(opening)
	go func() {
		for {
			select {
			case <-opening:
				return
			case <-nc.kick:
				nc.mu.Lock()
				wanted := nc.wantedLocked()
				nc.mu.Unlock()
				if !wanted {
					cancel()
					return
				}
			}
		}
	}()
	return s.Open(ctx)
}

// runSession waits while an open session runs: until it ends by itself
// (it gave up reconnecting: the pump stops), or is no longer wanted.
func (nc *nodeConsole) runSession(pumped <-chan struct{}) {
	for {
		nc.mu.Lock()
		stop := !nc.wantedLocked() || nc.fresh
		nc.mu.Unlock()
		if stop {
			return
		}
		select {
		case <-pumped:
			return
		case <-nc.c.ctx.Done():
			return
		case <-nc.kick:
		}
	}
}

// pump hands the session's records to the replay ring, the console log
// and the viewers, until the session ends.
func (nc *nodeConsole) pump(sub *sol.Subscription) {
	defer sub.Close()
	for {
		rec, err := sub.Next(context.Background())
		if err != nil {
			return
		}
		nc.mu.Lock()
		switch rec.Dir {
		case sol.Read:
			nc.ring.add(rec.Data)
			nc.clog.add(rec)
			for v := range nc.viewers {
				v.q.push(labctl.ConsoleMessage{Output: rec.Data})
			}
		case sol.Event:
			nc.clog.add(rec)
			msg := string(rec.Data)
			switch {
			case rec.Missed > 0:
				msg = fmt.Sprintf("the console broker missed %d bytes of output (it did not keep up)", rec.Missed)
				for v := range nc.viewers {
					v.q.push(labctl.ConsoleMessage{Notice: &labctl.ConsoleNotice{Kind: labctl.NoticeMissed, Text: msg, At: rec.Time, Missed: rec.Missed}})
				}
			case strings.HasPrefix(msg, "writer"):
				// Write changes reach viewers as the broker's own notices.
			default:
				switch {
				case strings.HasPrefix(msg, "session lost"):
					nc.setStateLocked(labctl.ConsoleConnecting, nil)
				case strings.HasPrefix(msg, "reconnected"):
					nc.setStateLocked(labctl.ConsoleOpen, nil)
				}
				nc.broadcastLocked(labctl.NoticeSession, msg)
			}
		}
		// Input (sol.Written) is neither logged nor shown: see consoleLog.
		nc.mu.Unlock()
	}
}

// waitOpen waits until the console is open on session number min (or a
// later one), at most timeout or until ctx ends. A console that is down
// is tried again at once (the caller's startLocked asked for it), and its
// failure returned once that try failed too. The session is returned in
// any case.
func (nc *nodeConsole) waitOpen(ctx context.Context, timeout time.Duration, min int) (*sol.Session, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		nc.mu.Lock()
		s, state, err, ch := nc.session, nc.state, nc.err, nc.changed
		current := nc.attempt >= min
		switch {
		case state == labctl.ConsoleOpen && current:
			nc.mu.Unlock()
			return s, nil
		case state == labctl.ConsoleDown && current:
			nc.mu.Unlock()
			return s, fmt.Errorf("console %s: %w", nc.name, err)
		case state == labctl.ConsoleClosed && !nc.running:
			nc.mu.Unlock()
			if s == nil {
				s = sol.NewSession(nc.dialer, sol.Options{})
				s.Close()
			}
			return s, fmt.Errorf("console %s: %w", nc.name, errBrokerClosed)
		}
		nc.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return s, fmt.Errorf("console %s: not open after %s (%s)", nc.name, timeout, state)
		case <-ctx.Done():
			return s, fmt.Errorf("console %s: %w", nc.name, context.Cause(ctx))
		}
	}
}

// release drops one holder. A console no longer wanted is closed before
// release returns (labctl run exits right after).
func (nc *nodeConsole) release(holder string) {
	nc.mu.Lock()
	if i := slices.Index(nc.holders, holder); i >= 0 {
		nc.holders = slices.Delete(nc.holders, i, i+1)
	}
	if holder != "" && !slices.Contains(nc.holders, holder) {
		msg := holder + " ended: the console is free"
		nc.noteLocked(holder + " released the console")
		nc.broadcastLocked(labctl.NoticeWriter, msg)
		nc.broadcastStateLocked()
	}
	nc.mu.Unlock()
	nc.stopIfUnwanted()
}

// stopIfUnwanted wakes the loop if the console is no longer wanted and
// waits (a little) for the session to close.
func (nc *nodeConsole) stopIfUnwanted() {
	nc.mu.Lock()
	if nc.wantedLocked() || !nc.running {
		nc.mu.Unlock()
		return
	}
	nc.wakeLocked()
	nc.mu.Unlock()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		nc.mu.Lock()
		done, ch := !nc.running || nc.wantedLocked(), nc.changed
		nc.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			return
		}
	}
}

// holderLocked is who holds the console for its own typing: the first
// named holder, "a job" for anonymous ones, or "".
func (nc *nodeConsole) holderLocked() string {
	for _, h := range nc.holders {
		if h != "" {
			return h
		}
	}
	if len(nc.holders) > 0 {
		return "a job"
	}
	return ""
}

// writerNameLocked is who may type now.
func (nc *nodeConsole) writerNameLocked() string {
	if h := nc.holderLocked(); h != "" {
		return h
	}
	if nc.writer != nil {
		return nc.writer.who
	}
	return ""
}

// holderStartedLocked makes a person with write read-only for holder.
func (nc *nodeConsole) holderStartedLocked(holder string) {
	nc.noteLocked(holder + " holds the console")
	if nc.writer != nil {
		w := nc.writer
		nc.dropWriterLocked()
		w.noticeLocked(labctl.NoticeWriter, fmt.Sprintf("%s started: it types on the console now; you are read-only until it ends", holder))
		for v := range nc.viewers {
			if v != w {
				v.noticeLocked(labctl.NoticeWriter, holder+" started: it has write")
			}
		}
	} else {
		nc.broadcastLocked(labctl.NoticeWriter, holder+" started: it has write")
	}
	nc.broadcastStateLocked()
}

// dropWriterLocked takes write from the person who has it.
func (nc *nodeConsole) dropWriterLocked() {
	if nc.pw != nil {
		nc.pw.Release()
	}
	nc.writer, nc.pw = nil, nil
}

// claimForWriterLocked gives the person with write a claim on the current
// session, if it is open.
func (nc *nodeConsole) claimForWriterLocked() {
	if nc.writer == nil || nc.state != labctl.ConsoleOpen || nc.session == nil {
		return
	}
	w, err := nc.session.Claim(nc.writer.who, true)
	if err != nil {
		nc.log.Warn("claim the console for a person", "who", nc.writer.who, "err", err)
		return
	}
	nc.pw = w
}

// takeWriteLocked gives v write if the rules allow it (see Broker), or
// says why not.
func (nc *nodeConsole) takeWriteLocked(v *viewer, force bool) (refused string) {
	if v.readOnly {
		return "read-only: you attached to watch"
	}
	if h := nc.holderLocked(); h != "" {
		if id, ok := strings.CutPrefix(h, "job "); ok {
			return fmt.Sprintf("read-only: %s is the writer; to type, cancel it first (labctl cancel %s)", h, id)
		}
		return fmt.Sprintf("read-only: %s is the writer until it ends", h)
	}
	if nc.writer == v {
		return ""
	}
	prev := nc.writer
	if prev != nil && !force {
		return fmt.Sprintf("read-only: %s has write (labctl console --force takes it)", prev.who)
	}
	nc.dropWriterLocked()
	nc.writer = v
	nc.claimForWriterLocked()
	if taken := nc.c.cfg.WriteTaken; taken != nil {
		from := ""
		if prev != nil {
			from = prev.who
		}
		taken(v.as(context.Background(), v.token), nc.name, v.who, from)
	}
	if prev != nil {
		prev.noticeLocked(labctl.NoticeWriter, fmt.Sprintf("%s took write: you are read-only now", v.who))
		nc.noteLocked(fmt.Sprintf("%s took write from %s", v.who, prev.who))
	} else {
		nc.noteLocked(v.who + " has write")
	}
	v.noticeLocked(labctl.NoticeWriter, "you have write")
	for o := range nc.viewers {
		if o != v && o != prev {
			o.noticeLocked(labctl.NoticeWriter, v.who+" has write")
		}
	}
	nc.broadcastStateLocked()
	return ""
}

// noteLocked writes a broker note to the console log.
func (nc *nodeConsole) noteLocked(msg string) {
	nc.clog.note(msg)
}

// announceLocked writes msg to the console log and tells every viewer.
func (nc *nodeConsole) announceLocked(kind, msg string) {
	nc.noteLocked(msg)
	nc.broadcastLocked(kind, msg)
}

// broadcastLocked sends a notice to every viewer.
func (nc *nodeConsole) broadcastLocked(kind, text string) {
	for v := range nc.viewers {
		v.noticeLocked(kind, text)
	}
}

// broadcastStateLocked sends each viewer the state, if it changed for it.
func (nc *nodeConsole) broadcastStateLocked() {
	for v := range nc.viewers {
		v.stateLocked()
	}
}

// stateForLocked is the console's state as v sees it.
func (nc *nodeConsole) stateForLocked(v *viewer) labctl.ConsoleState {
	st := labctl.ConsoleState{
		Node: nc.name, Target: nc.dialer.Target(), State: nc.state,
		Writer: nc.writerNameLocked(), You: v.who, Write: nc.writer == v && nc.holderLocked() == "",
		Viewers: len(nc.viewers),
	}
	if nc.err != nil && nc.state == labctl.ConsoleDown {
		st.Error = nc.err.Error()
	}
	return st
}

// info reports the console for listings.
func (nc *nodeConsole) info() labctl.ConsoleInfo {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	info := labctl.ConsoleInfo{
		Node: nc.name, State: nc.state, Since: nc.since, Target: nc.dialer.Target(),
		Holder: nc.holderLocked(), Writer: nc.writerNameLocked(), Viewers: []labctl.ConsoleViewer{},
	}
	if nc.err != nil && nc.state == labctl.ConsoleDown {
		info.Error = nc.err.Error()
	}
	if nc.clog != nil {
		info.Log = nc.clog.path
	}
	for v := range nc.viewers {
		info.Viewers = append(info.Viewers, labctl.ConsoleViewer{
			Who: v.who, Token: v.token, Write: nc.writer == v && info.Holder == "", ReadOnly: v.readOnly,
			Since: v.since, Window: v.window, Missed: v.q.dropped(),
		})
	}
	slices.SortFunc(info.Viewers, func(a, b labctl.ConsoleViewer) int { return a.Since.Compare(b.Since) })
	return info
}

//go:build !labctl_run

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/console"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/lab"
)

type consoleOptions struct {
	client   clientOptions
	node     string
	direct   bool
	lab      string
	force    bool
	readOnly bool
	replay   int
	// in is the keyboard; nil means stdin (a terminal is put in raw mode
	// while attached).
	in io.Reader
}

func newConsoleCommand(env *appEnv) *cli.Command {
	return &cli.Command{
		Name:      "console",
		Usage:     "attach to a node's serial console, through the daemon (or --direct)",
		ArgsUsage: "NODE",
		Description: `Attaches this terminal to the node's serial console. The daemon owns
the console session (one per node: a BMC allows one SOL session at a
time) and logs everything the node prints, watched or not, to
STATE/devices/NODE/console.log. labctl console shows the last lines
(--replay), then the console live; labctl's own messages are lines that
start with [labctl].

One person writes at a time: the first to attach (or to type once write
is free) gets write, later ones watch read-only and are told so;
--force takes write from another person, who is told. While a job or a
health check runs on the node it is the writer: you see what it types
and what the node answers, and typing is refused until the job ends or is
canceled (labctl cancel ID). A viewer that stops reading never slows the
node or the job: it is told how many bytes it missed.

Escapes, at the start of a line (after Enter):
   ~.  detach (the node and any job go on)
   ~B  send a break (ipmitool consoles; SysRq on Linux: ~B, then the key)
   ~R  power-cycle the node (asks first; refused during a job)
   ~?  help, and who writes
   ~~  type a ~

A serial console cannot tell the node your window size: a person with
write is reminded to run "stty rows R cols C" on the node, so that
full-screen programs fit.

With --direct (and --lab FILE) labctl opens the device's console itself,
without a daemon, with the same escapes; it refuses while a labctl serve
owns the lab (the two sessions would take the console from each other).

EXAMPLES:
   labctl console node1
   labctl console node1 --read-only --replay 200
   labctl console node1 --force
   labctl console --direct node1 --lab build/simlab/lab/lab.toml

EXIT STATUS:
   0 detached (~.), 1 the console or the daemon went away, or an error,
   64 the command line is wrong.`,
		Flags: append(clientFlags(),
			&cli.BoolFlag{Name: "direct", Usage: "open the console here, without a daemon (needs --lab)"},
			&cli.StringFlag{Name: "lab", Usage: "with --direct: the lab `FILE`", EnvVars: []string{"LABCTL_LAB"}, TakesFile: true},
			&cli.BoolFlag{Name: "force", Usage: "take write from another person (never from a job)"},
			&cli.BoolFlag{Name: "read-only", Usage: "watch only: never take write"},
			&cli.IntFlag{Name: "replay", Value: 50, Usage: "show the last `N` lines of output first"},
		),
		BashComplete: completeNodes(env, nil),
		Action: func(c *cli.Context) error {
			args, err := commandArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return usageErrorf("console: want one NODE (see labctl console --help)")
			}
			opts := consoleOptions{client: clientOptionsFrom(c), node: args[0], direct: c.Bool("direct"),
				lab: c.String("lab"), force: c.Bool("force"), readOnly: c.Bool("read-only"), replay: c.Int("replay")}
			switch {
			case opts.force && opts.readOnly:
				return usageErrorf("console: --force and --read-only exclude each other")
			case opts.direct && opts.lab == "":
				return usageErrorf("console: --direct needs --lab FILE (or $LABCTL_LAB)")
			case opts.replay < 0 || opts.replay > 10000:
				return usageErrorf("console: --replay %d: want 0 to 10000", opts.replay)
			}
			return runConsole(c.Context, opts, env)
		},
	}
}

// errDetached ends a console by ~. (or the keyboard's end).
var errDetached = errors.New("detached")

func runConsole(ctx context.Context, opts consoleOptions, env *appEnv) error {
	kb := newKeyboard(opts.in)
	ao := labctl.ConsoleOptions{Who: whoAmI(env), Replay: opts.replay, Force: opts.force, ReadOnly: opts.readOnly, Window: kb.size()}
	var att labctl.ConsoleAttachment
	if opts.direct {
		v, closeDirect, err := attachDirect(ctx, opts, ao)
		if err != nil {
			return err
		}
		defer closeDirect()
		att = v
	} else {
		client, err := connect(opts.client, env)
		if err != nil {
			return err
		}
		if att, err = client.AttachConsole(ctx, opts.node, ao); err != nil {
			return err
		}
	}
	defer att.Close()
	restore, err := kb.raw()
	if err != nil {
		return fmt.Errorf("console %s: terminal: %w", opts.node, err)
	}
	defer restore()
	cs := &consoleScreen{out: env.stdout, node: opts.node, lineStart: true}
	return cs.run(ctx, att, kb)
}

// whoAmI names this person for others: user@host.
func whoAmI(env *appEnv) string {
	user := cmp.Or(env.getenv("USER"), env.getenv("LOGNAME"))
	host, _ := os.Hostname()
	host, _, _ = strings.Cut(host, ".")
	switch {
	case user != "" && host != "":
		return shorten(user+"@"+host, 64)
	case user != "":
		return shorten(user, 64)
	}
	return ""
}

// keyboard is where typing comes from: a terminal (raw while attached,
// its size followed) or any reader (tests, pipes).
type keyboard struct {
	r  io.Reader
	fd int // -1 if not a terminal
}

func newKeyboard(in io.Reader) *keyboard {
	if in == nil {
		in = os.Stdin
	}
	kb := &keyboard{r: in, fd: -1}
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		kb.fd = int(f.Fd())
	}
	return kb
}

// size is the terminal's size (0x0 if unknown).
func (kb *keyboard) size() labctl.WindowSize {
	if kb.fd < 0 {
		return labctl.WindowSize{}
	}
	cols, rows, err := term.GetSize(kb.fd)
	if err != nil {
		return labctl.WindowSize{}
	}
	return labctl.WindowSize{Rows: rows, Cols: cols}
}

// raw puts a terminal in raw mode (^C, ^Z go to the node) and returns
// what puts it back.
func (kb *keyboard) raw() (func(), error) {
	if kb.fd < 0 {
		return func() {}, nil
	}
	st, err := term.MakeRaw(kb.fd)
	if err != nil {
		return nil, err
	}
	return func() { term.Restore(kb.fd, st) }, nil
}

// resizes sends the terminal's new size on every SIGWINCH until ctx ends.
func (kb *keyboard) resizes(ctx context.Context, att labctl.ConsoleAttachment) {
	if kb.fd < 0 {
		return
	}
	ch := make(chan os.Signal, 1)
	notifyResize(ch)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			if w := kb.size(); w.Rows > 0 {
				att.Resize(w)
			}
		}
	}
}

// consoleScreen writes the console and labctl's own lines to the
// terminal.
type consoleScreen struct {
	node string

	mu        sync.Mutex
	out       io.Writer
	lineStart bool // the cursor is at the start of a line
	state     labctl.ConsoleState
}

// run shows att until the person detaches, the attachment ends or ctx
// ends.
func (cs *consoleScreen) run(parent context.Context, att labctl.ConsoleAttachment, kb *keyboard) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	cs.say("attached to %s; ~? for help, ~. to detach", cs.node)
	go kb.resizes(ctx, att)
	go cs.keys(ctx, cancel, att, kb.r)
	for {
		m, err := att.Next(ctx)
		if err != nil {
			cause := context.Cause(ctx)
			switch {
			case errors.Is(cause, errDetached):
				cs.say("detached from %s", cs.node)
				return nil
			case parent.Err() != nil:
				cs.say("interrupted: detached from %s", cs.node)
				return context.Cause(parent)
			case errors.Is(err, labctl.ErrConsoleClosed):
				return fmt.Errorf("console %s: the console was closed", cs.node)
			case ctx.Err() != nil:
				err = cause
			}
			cs.say("connection lost: %v", err)
			return fmt.Errorf("console %s: %w", cs.node, err)
		}
		cs.show(m)
	}
}

// keys reads the keyboard and acts on it until it ends (then it detaches,
// as it does on ~.).
func (cs *consoleScreen) keys(ctx context.Context, cancel context.CancelCauseFunc, att labctl.ConsoleAttachment, r io.Reader) {
	p := newEscapeParser()
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		for _, ev := range p.feed(buf[:n]) {
			var aerr error
			switch ev.Action {
			case escSend:
				aerr = att.Input(ev.Data)
			case escDetach:
				cancel(errDetached)
				return
			case escHelp:
				cs.help()
			case escBreak:
				aerr = att.Break()
			case escPowerAsk:
				cs.ask(fmt.Sprintf("power-cycle %s? [y/N] ", cs.node))
			case escPowerYes:
				cs.answer("y")
				aerr = att.PowerCycle()
			case escPowerNo:
				cs.answer("n")
				cs.say("not power-cycled")
			}
			if aerr != nil && ctx.Err() == nil {
				cancel(aerr)
				return
			}
		}
		if err != nil {
			cancel(errDetached)
			return
		}
	}
}

// show writes one message.
func (cs *consoleScreen) show(m labctl.ConsoleMessage) {
	switch {
	case m.Output != nil:
		cs.mu.Lock()
		cs.out.Write(m.Output)
		cs.lineStart = m.Output[len(m.Output)-1] == '\n'
		cs.mu.Unlock()
	case m.Notice != nil:
		cs.say("%s", m.Notice.Text)
	case m.State != nil:
		cs.mu.Lock()
		cs.state = *m.State
		cs.mu.Unlock()
	}
}

// say writes one of labctl's own lines, on a line of its own.
func (cs *consoleScreen) say(format string, args ...any) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var b strings.Builder
	if !cs.lineStart {
		b.WriteString("\r\n")
	}
	b.WriteString("[labctl] ")
	fmt.Fprintf(&b, format, args...)
	b.WriteString("\r\n")
	io.WriteString(cs.out, b.String())
	cs.lineStart = true
}

// ask writes a question and leaves the cursor after it.
func (cs *consoleScreen) ask(q string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !cs.lineStart {
		io.WriteString(cs.out, "\r\n")
	}
	io.WriteString(cs.out, "[labctl] "+q)
	cs.lineStart = false
}

// answer echoes the answer to a question and ends its line.
func (cs *consoleScreen) answer(a string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	io.WriteString(cs.out, a+"\r\n")
	cs.lineStart = true
}

// help lists the escapes and who writes.
func (cs *consoleScreen) help() {
	cs.mu.Lock()
	st := cs.state
	cs.mu.Unlock()
	cs.say("escapes, at the start of a line: ~. detach  ~B break  ~R power-cycle  ~~ a ~  ~? this help")
	who := "nobody writes"
	switch {
	case st.Write:
		who = "you have write"
	case st.Writer != "":
		who = "read-only: " + st.Writer + " writes"
	}
	cs.say("%s: console %s (%s); %s; %d viewer(s)", cs.node, st.State, st.Target, who, st.Viewers)
}

// attachDirect opens the device's console in this process (an in-process
// broker, so escapes, breaks and ipmitool quoting work as through the
// daemon) and attaches to it.
func attachDirect(ctx context.Context, opts consoleOptions, ao labctl.ConsoleOptions) (labctl.ConsoleAttachment, func(), error) {
	if errDirectUnsupported != nil {
		return nil, nil, errDirectUnsupported
	}
	cfg, err := devices.Load(opts.lab)
	if err != nil {
		return nil, nil, err
	}
	dev, ok := cfg.Device(opts.node)
	if !ok {
		return nil, nil, fmt.Errorf("no device %q in lab %s", opts.node, cfg.File)
	}
	unlock, err := lockNode(cfg.StateDir, dev.Name, "console --direct", "attach through it (labctl console "+dev.Name+", without --direct)")
	if err != nil {
		return nil, nil, err
	}
	quiet := slog.New(slog.DiscardHandler)
	l := lab.New(cfg, nil, quiet)
	broker := console.New(console.Config{
		Lab: cfg, Nodes: l, Power: lab.Direct{Lab: l},
		Log: quiet, LogDir: filepath.Join(cfg.StateDir, "devices"),
	})
	v, err := broker.AttachConsole(labctl.WithCaller(ctx, "direct"), dev.Name, ao)
	if err != nil {
		broker.Close()
		l.Close()
		unlock()
		return nil, nil, err
	}
	return v, func() {
		v.Close()
		broker.Close()
		l.Close()
		unlock()
	}, nil
}

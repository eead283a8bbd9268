package labctl

import (
	"context"
	"errors"
	"time"
)

// ConsoleService is the console broker: people watching and typing on a
// node's serial console, which the broker owns (one session per node: a
// BMC allows one SOL session at a time). The daemon implements it; package
// api carries its attachments over an upgraded HTTP connection (the CLI)
// and a dashboard can carry them over a WebSocket.
type ConsoleService interface {
	// AttachConsole attaches the caller to the node's console as a viewer
	// (the caller's token name is in ctx, CallerFrom). ctx bounds the
	// attaching only; the attachment lives until Close. A console that is
	// not open yet, or down, does not make attaching fail: the viewer is
	// told how opening goes.
	AttachConsole(ctx context.Context, node string, opts ConsoleOptions) (ConsoleAttachment, error)
	// Consoles reports every node's console: open or not, who watches,
	// who writes.
	Consoles(ctx context.Context) ([]ConsoleInfo, error)
	// Console reports one node's console.
	Console(ctx context.Context, node string) (ConsoleInfo, error)
}

// ConsoleOptions say how a viewer attaches.
type ConsoleOptions struct {
	// Who names the person, e.g. "alice@laptop" (shown to others and in
	// the console log); "" means the token's name.
	Who string
	// Replay is how many lines of recent console output to send first.
	Replay int
	// Force takes write from another person (who is told). It never takes
	// write from a job: that needs the job canceled first.
	Force bool
	// ReadOnly never takes write: watch only.
	ReadOnly bool
	// Window is the viewer's terminal size (0x0: unknown).
	Window WindowSize
}

// WindowSize is a terminal's size in characters.
type WindowSize struct {
	Rows int `json:"rows"`
	Cols int `json:"cols"`
}

// ConsoleAttachment is one viewer's connection to a node's console.
//
// Input, Resize, Break and PowerCycle do not wait for the console: what
// they lead to, refusals included ("read-only: job 42 is the writer"),
// comes back as notices through Next. They return an error only when the
// attachment is over.
type ConsoleAttachment interface {
	// Next returns the next message for the viewer, waiting until ctx
	// ends. After the attachment ends (Close, the broker stopping, the
	// connection dropping) it returns what is queued, then an error:
	// ErrConsoleClosed when the attachment ended in order.
	Next(ctx context.Context) (ConsoleMessage, error)
	// Input types p on the console, if this viewer has write (or write is
	// free and the viewer did not attach read-only: then it takes it).
	// It does not keep p.
	Input(p []byte) error
	// Resize tells the broker the viewer's terminal size.
	Resize(w WindowSize) error
	// Break sends a serial break (the writer only).
	Break() error
	// PowerCycle power-cycles the node (the writer only; refused while a
	// job or a health check owns the node). The result comes as a notice.
	PowerCycle() error
	// Close detaches. It is idempotent.
	Close() error
}

// ErrConsoleClosed ends an attachment's messages when it ended in order
// (detached, or the broker closed it after saying why in a notice).
var ErrConsoleClosed = errors.New("console attachment closed")

// ConsoleMessage is one thing for a viewer: exactly one field is set.
type ConsoleMessage struct {
	// Output is console output: bytes the node printed (raw, escape
	// sequences included).
	Output []byte
	// Notice is news for the viewer: the session was lost or is back,
	// write changed hands, input was refused, bytes were missed.
	Notice *ConsoleNotice
	// State is the console's state as it concerns this viewer, sent on
	// attach and whenever it changes.
	State *ConsoleState
}

// Notice kinds.
const (
	NoticeInfo    = "info"    // attach, detach of others, help
	NoticeSession = "session" // the session: connecting, lost, reconnected, gave up
	NoticeWriter  = "writer"  // write changed hands
	NoticeRefused = "refused" // something this viewer asked for was refused
	NoticeMissed  = "missed"  // this viewer lost output (see Missed)
	NoticeAction  = "action"  // break sent, power cycle started or done
	NoticeClosed  = "closed"  // the attachment ends (the daemon stops); last message
)

// ConsoleNotice is a line of news for a viewer.
type ConsoleNotice struct {
	Kind string    `json:"kind"`
	Text string    `json:"text"`
	At   time.Time `json:"at"`
	// Missed (kind missed) is how many bytes of output this viewer lost
	// because it did not keep up.
	Missed int64 `json:"missed,omitempty"`
}

// Console states.
const (
	ConsoleClosed     = "closed"     // not open (never used, or the device is in maintenance)
	ConsoleConnecting = "connecting" // opening, or reconnecting after a drop
	ConsoleOpen       = "open"
	ConsoleDown       = "down" // opening failed; retried with backoff (Error says why)
)

// ConsoleState is a node's console as one viewer sees it.
type ConsoleState struct {
	Node   string `json:"node"`
	Target string `json:"target"` // what the console connects to, e.g. "node1 console (ipmitool, bmc 10.0.0.5:623)"
	State  string `json:"state"`  // closed, connecting, open, down
	Error  string `json:"error,omitempty"`
	// Writer is who may type: a person, "job 42", "health check", or "".
	Writer string `json:"writer,omitempty"`
	// You are this viewer as others see it; Write says you have write.
	You     string `json:"you"`
	Write   bool   `json:"write"`
	Viewers int    `json:"viewers"`
}

// ConsoleInfo is a node's console for listings (labctl consoles).
type ConsoleInfo struct {
	Node   string    `json:"node"`
	State  string    `json:"state"`
	Since  time.Time `json:"since,omitzero"`
	Target string    `json:"target,omitempty"`
	Error  string    `json:"error,omitempty"`
	// Holder is the job or health check that owns the node's console
	// (and writes on it), if any.
	Holder string `json:"holder,omitempty"`
	// Writer is who may type now (the holder, a person, or nobody).
	Writer  string          `json:"writer,omitempty"`
	Viewers []ConsoleViewer `json:"viewers"`
	// Log is the node's console log on the daemon's host.
	Log string `json:"log,omitempty"`
}

// ConsoleViewer is one attached viewer.
type ConsoleViewer struct {
	Who      string     `json:"who"`
	Token    string     `json:"token"`
	Write    bool       `json:"write"`
	ReadOnly bool       `json:"read_only,omitempty"` // attached --read-only
	Since    time.Time  `json:"since"`
	Window   WindowSize `json:"window"`
	// Missed is how many bytes of output this viewer lost so far.
	Missed int64 `json:"missed,omitempty"`
}

// TerminalReportLen is the length of the terminal report at the start of
// p, or 0: a terminal's answer to a query from the node, which reaches the
// console as typing. Cursor position (ESC [ 24 ; 15 R), device attributes
// (ESC [ ? 1 ; 2 c), status (ESC [ 0 n). busybox asks for the cursor
// position after every prompt, so the answer comes right after Enter; the
// client and the daemon both treat it as leaving the start of a line where
// it was (escapes such as ~. and ipmitool's ~B work only there).
func TerminalReportLen(p []byte) int {
	if len(p) < 4 || p[0] != 0x1b || p[1] != '[' {
		return 0
	}
	i, digits := 2, false
	for i < len(p) && (p[i] >= '0' && p[i] <= '9' || p[i] == ';' || p[i] == '?' || p[i] == '>') {
		digits = digits || p[i] >= '0' && p[i] <= '9'
		i++
	}
	if i == len(p) || !digits || (p[i] != 'R' && p[i] != 'c' && p[i] != 'n') {
		return 0
	}
	return i + 1
}

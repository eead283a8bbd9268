package sol

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/labctl/labctl/internal/rawpty"
)

// CommandDialer runs a connection command in a pseudo-terminal, e.g.
//
//	ipmitool -I lanplus -C 3 -H 10.0.0.5 -U admin -E sol activate
//
// The command's terminal is the console stream: what it prints is console
// output, what is written to the stream is typed to it, byte for byte (the
// terminal is in raw mode: no local echo, no line buffering, ^C is a byte).
// The command is run directly (no shell) in its own session and process
// group; Close hangs up the terminal and kills the whole group. Ptys and
// process groups are Unix's: elsewhere Dial refuses (command_other.go).
//
// Secrets go in Env, never in Argv: ipmitool -E reads IPMI_PASSWORD.
//
// The stream's Read returns an error when the session ends: one wrapping
// ErrClosedByBMC if the command printed "SOL session closed by BMC", else one
// wrapping io.EOF that says how the command exited and what it printed last.
type CommandDialer struct {
	// Argv is the connection command and its arguments.
	Argv []string
	// Env holds extra "KEY=value" entries added to this process's
	// environment for both commands. Never logged.
	Env []string
	// Reset, if set, is run to completion before each dial, e.g.
	// "ipmitool ... sol deactivate" to clear a stale session; if it fails
	// the failure is logged and the dial goes ahead.
	Reset []string
	// ResetTimeout bounds Reset; 0 means 15 s.
	ResetTimeout time.Duration
	// Ready, if set, makes Dial wait until the command's output matches it
	// (e.g. `SOL Session operational` for ipmitool), so that a command that
	// fails to connect is a failed dial rather than a session that ends at
	// once. The output read meanwhile is still delivered by Read.
	Ready *regexp.Regexp
	// Name is the Target; if empty, Argv joined by spaces.
	Name string
	// Log receives reset failures; nil discards them.
	Log *slog.Logger
}

// Target implements Dialer.
func (d *CommandDialer) Target() string {
	if d.Name != "" {
		return d.Name
	}
	return strings.Join(d.Argv, " ")
}

func (d *CommandDialer) log() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}

// Dial implements Dialer: it runs Reset (if any), starts Argv in a pty and,
// if Ready is set, waits for it.
func (d *CommandDialer) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	if len(d.Argv) == 0 {
		return nil, errors.New("console command: no command given")
	}
	if errNoPty != nil {
		return nil, errNoPty
	}
	if len(d.Reset) > 0 {
		d.reset(ctx)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("console %s: %w", d.Target(), err)
	}
	cmd := exec.Command(d.Argv[0], d.Argv[1:]...)
	cmd.Env = append(os.Environ(), d.Env...)
	f, err := rawpty.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("console %s: start %s: %w", d.Target(), d.Argv[0], err)
	}
	s := &ptyStream{cmd: cmd, done: make(chan struct{}), name: d.Argv[0], started: time.Now()}
	go s.wait()
	// pty leaves the master in blocking mode (its ioctls go through Fd), so
	// Close would not unblock a Read. Take a non-blocking duplicate that the
	// runtime poller manages, and drop the original.
	s.f, err = pollable(f)
	_ = f.Close()
	if err != nil {
		s.kill()
		<-s.done
		return nil, fmt.Errorf("console %s: %w", d.Target(), err)
	}
	if d.Ready != nil {
		if err := s.waitReady(ctx, d.Ready); err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("console %s: %w", d.Target(), err)
		}
	}
	return s, nil
}

// reset runs the reset command; its failure is only logged.
func (d *CommandDialer) reset(ctx context.Context) {
	timeout := d.ResetTimeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Reset[0], d.Reset[1:]...)
	cmd.Env = append(os.Environ(), d.Env...)
	ownProcessGroup(cmd)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		d.log().Debug("console reset command failed; dialing anyway",
			"target", d.Target(), "command", strings.Join(d.Reset, " "),
			"err", err, "output", lastBytes(out, 200))
	}
}

// closedByBMC is what ipmitool prints when the BMC ends the session.
var closedByBMC = []byte("SOL session closed by BMC")

// ptyStream is a running connection command.
type ptyStream struct {
	f       *os.File
	cmd     *exec.Cmd
	name    string
	started time.Time
	done    chan struct{} // closed when the command has exited and been reaped
	waitErr error         // valid after done

	mu        sync.Mutex
	pending   []byte // output read while waiting for Ready, not yet returned
	tail      []byte // the last output, for the exit error and the BMC message
	bmcClosed bool
	closed    bool
	endErr    error // the error Read returns once the session has ended
}

// wait reaps the command, then kills what is left of its process group: a
// grandchild holding the terminal open would otherwise keep Read blocked.
func (s *ptyStream) wait() {
	s.waitErr = s.cmd.Wait()
	killProcessGroup(s.cmd.Process)
	close(s.done)
}

func (s *ptyStream) kill() {
	killProcessGroup(s.cmd.Process)
}

// waitReady reads until the output matches ready, the command exits or ctx
// ends. What it read is kept for Read.
func (s *ptyStream) waitReady(ctx context.Context, ready *regexp.Regexp) error {
	stop := context.AfterFunc(ctx, func() { _ = s.f.SetReadDeadline(time.Now()) })
	defer stop()
	var seen []byte
	buf := make([]byte, 4096)
	for {
		n, err := s.f.Read(buf)
		if n > 0 {
			s.observe(buf[:n])
			s.mu.Lock()
			s.pending = append(s.pending, buf[:n]...)
			s.mu.Unlock()
			seen = append(seen, normalize(buf[:n])...)
			if ready.Match(seen) {
				return nil
			}
			if len(seen) > 64<<10 {
				seen = seen[len(seen)-32<<10:]
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				_ = s.f.SetReadDeadline(time.Time{})
				return fmt.Errorf("waiting for %s to print %q: %w; last output %q",
					s.name, ready, ctx.Err(), lastBytes(normalize(s.tailCopy()), 200))
			}
			return s.ended(err)
		}
	}
}

// Read implements io.Reader.
func (s *ptyStream) Read(p []byte) (int, error) {
	s.mu.Lock()
	if len(s.pending) > 0 {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		s.mu.Unlock()
		return n, nil
	}
	if s.endErr != nil {
		err := s.endErr
		s.mu.Unlock()
		return 0, err
	}
	s.mu.Unlock()
	n, err := s.f.Read(p)
	if n > 0 {
		s.observe(p[:n])
	}
	if err != nil {
		end := s.ended(err)
		s.mu.Lock()
		s.endErr = end
		s.mu.Unlock()
		if n > 0 {
			return n, nil // the data now, the end on the next call
		}
		return 0, end
	}
	return n, nil
}

// observe keeps the tail of the output and looks for ipmitool's message.
func (s *ptyStream) observe(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tail = append(s.tail, p...)
	if !s.bmcClosed && bytes.Contains(s.tail, closedByBMC) {
		s.bmcClosed = true
	}
	if len(s.tail) > 512 {
		s.tail = append(s.tail[:0], s.tail[len(s.tail)-256:]...)
	}
}

func (s *ptyStream) tailCopy() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.tail...)
}

// ended turns the error that ended reading into the stream's end error.
// EIO is how a pty master reports that the command closed its terminal.
func (s *ptyStream) ended(err error) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed || errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	if !errors.Is(err, syscall.EIO) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read from %s: %w", s.name, err)
	}
	// The terminal is closed; the command is exiting (or has a reason to
	// keep running without it: then it goes).
	select {
	case <-s.done:
	case <-time.After(2 * time.Second):
		s.kill()
		<-s.done
	}
	status := "exited"
	if s.waitErr != nil {
		status = s.waitErr.Error()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bmcClosed {
		return fmt.Errorf("%s: %s: %w", s.name, status, ErrClosedByBMC)
	}
	return fmt.Errorf("%s %s after %s (last output %q): %w", s.name, status,
		time.Since(s.started).Round(time.Millisecond), lastBytes(normalize(s.tail), 200), io.EOF)
}

// Write implements io.Writer.
func (s *ptyStream) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return n, ErrClosed
		}
		return n, fmt.Errorf("write to %s: %w", s.name, err)
	}
	return n, nil
}

// Close hangs up the terminal (SIGHUP to the command), gives the command a
// moment to exit, then kills its process group and reaps it.
func (s *ptyStream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.f.Close()
	select {
	case <-s.done:
	case <-time.After(500 * time.Millisecond):
		s.kill()
		<-s.done
	}
	if err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("close %s pty: %w", s.name, err)
	}
	return nil
}

// lastBytes returns the last n bytes of p as a string, trimmed of space.
func lastBytes(p []byte, n int) string {
	if len(p) > n {
		p = p[len(p)-n:]
	}
	return strings.TrimSpace(string(p))
}

// Program finds the program a connection command runs behind the usual
// wrappers (env, nice, ionice, stdbuf), and its arguments: for
// "nice -n 19 ipmitool -I lanplus ..." it is "ipmitool" and the rest. The
// name is the base name; an empty argv gives "".
func Program(argv []string) (name string, args []string) {
	for len(argv) > 0 {
		base := filepath.Base(argv[0])
		rest := argv[1:]
		switch base {
		case "env":
			for len(rest) > 0 && (strings.HasPrefix(rest[0], "-") || strings.Contains(rest[0], "=")) {
				rest = rest[1:]
			}
		case "nice", "ionice", "stdbuf":
			for len(rest) > 0 && strings.HasPrefix(rest[0], "-") {
				opt := rest[0]
				rest = rest[1:]
				// Options with their value in the next word.
				if (opt == "-n" || opt == "-c" || opt == "-p" || opt == "-i" || opt == "-o" || opt == "-e") && len(rest) > 0 {
					rest = rest[1:]
				}
			}
		default:
			return base, rest
		}
		argv = rest
	}
	return "", nil
}

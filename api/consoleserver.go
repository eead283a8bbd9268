package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/labctl/labctl"
)

const (
	// consoleHeartbeat is how long a console connection may be quiet
	// before the daemon sends a heartbeat frame.
	consoleHeartbeat = 15 * time.Second
	// consoleWriteTimeout drops a viewer that has not taken a frame for
	// this long (its process stopped, its network gone). Until then its
	// bounded buffer in the broker overflows and it is told what it
	// missed when it reads again.
	consoleWriteTimeout = 5 * time.Minute
	// consoleSocketBuffer caps the kernel's socket buffers of a console
	// connection (both ends). Console traffic is a few KB/s; left to
	// autotuning, a stuck viewer's sockets would swallow megabytes before
	// the broker's bounded buffer noticed anything.
	consoleSocketBuffer = 64 << 10
	// maxReplayLines bounds a viewer's replay request.
	maxReplayLines = 10000
)

func (s *Server) consoleService() (labctl.ConsoleService, error) {
	cs, ok := s.svc.(labctl.ConsoleService)
	if !ok {
		return nil, fmt.Errorf("%w: this daemon has no console broker", labctl.ErrNotFound)
	}
	return cs, nil
}

func (s *Server) consoles(w http.ResponseWriter, r *http.Request) {
	cs, err := s.consoleService()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	list, err := cs.Consoles(r.Context())
	replyList(s, w, r, list, err)
}

func (s *Server) console(w http.ResponseWriter, r *http.Request) {
	cs, err := s.consoleService()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	info, err := cs.Console(r.Context(), r.PathValue("name"))
	s.reply(w, r, info, err)
}

// consoleRole applies the caller's role and name to a viewer's options:
// the viewer is the token's name (what the client says of itself follows
// in parentheses), and a caller that may not type on consoles attaches
// read-only; asking to take write from someone needs an operator.
func (s *Server) consoleRole(ctx context.Context, node string, o labctl.ConsoleOptions) (labctl.ConsoleOptions, error) {
	caller := labctl.CallerFrom(ctx)
	switch {
	case o.Who == "" || o.Who == caller:
		o.Who = caller
	default:
		o.Who = caller + " (" + o.Who + ")"
	}
	if labctl.RoleFrom(ctx).Allows(labctl.RoleOperator) {
		return o, nil
	}
	if o.Force {
		return o, labctl.Authorize(ctx, labctl.RoleOperator, "taking write on the console of "+node)
	}
	o.ReadOnly = true
	return o, nil
}

// viewerOptions reads an attach request's options for the console of
// node and applies the caller's role (consoleRole); a refused force is
// audited.
func (s *Server) viewerOptions(r *http.Request, node string) (labctl.ConsoleOptions, error) {
	opts, err := consoleOptionsFrom(r.URL.Query())
	if err != nil {
		return opts, err
	}
	if opts, err = s.consoleRole(r.Context(), node, opts); err != nil {
		s.refused(r, labctl.AuditEntry{Action: labctl.AuditConsoleWrite, Detail: "force"}, err)
	}
	return opts, err
}

// consoleAttach upgrades the request to a console connection: frames both
// ways (consolewire.go) between the viewer and a ConsoleAttachment, until
// either side ends it or the server stops.
func (s *Server) consoleAttach(w http.ResponseWriter, r *http.Request) {
	cs, err := s.consoleService()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !headerHas(r.Header, "Connection", "upgrade") || !headerHas(r.Header, "Upgrade", ConsoleProtocol) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", ConsoleProtocol)
		writeJSON(w, http.StatusUpgradeRequired, errorBody{Error: "this endpoint speaks " + ConsoleProtocol +
			": send Connection: Upgrade and Upgrade: " + ConsoleProtocol + " (labctl console does)"})
		return
	}
	name := r.PathValue("name")
	opts, err := s.viewerOptions(r, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	att, err := cs.AttachConsole(r.Context(), name, opts)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer att.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.fail(w, r, fmt.Errorf("console %s: take over the connection: %w", name, err))
		return
	}
	defer conn.Close()
	// The server's read and write timeouts stay on a hijacked connection.
	conn.SetDeadline(time.Time{})
	setSendBuffer(conn, consoleSocketBuffer)
	brw.Writer.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + ConsoleProtocol + "\r\n\r\n")
	if err := brw.Writer.Flush(); err != nil {
		return
	}
	s.log.Info("console attached", "device", name, "who", opts.Who, "caller", labctl.CallerFrom(r.Context()), "remote", r.RemoteAddr)
	why := serveConsole(r.Context(), conn, brw.Reader, att)
	s.log.Info("console detached", "device", name, "who", opts.Who, "caller", labctl.CallerFrom(r.Context()), "why", why)
}

// serveConsole moves frames between conn and att until one side ends,
// and says why it ended. When ctx ends first (the server stops), the
// viewer is told so.
func serveConsole(ctx context.Context, conn net.Conn, br *bufio.Reader, att labctl.ConsoleAttachment) string {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The viewer's frames.
	go func() {
		fr := newFrameReader(br)
		for {
			f, err := fr.next()
			if err != nil {
				cancel(fmt.Errorf("viewer: %w", err))
				return
			}
			switch f.typ {
			case frameInput:
				err = att.Input(f.payload)
			case frameResize:
				var ws labctl.WindowSize
				if ws, err = decodeResize(f.payload); err == nil {
					err = att.Resize(ws)
				}
			case frameBreak:
				err = att.Break()
			case framePower:
				err = att.PowerCycle()
			}
			if err != nil {
				cancel(err)
				return
			}
		}
	}()

	var buf []byte
	for {
		hctx, hcancel := context.WithTimeout(ctx, consoleHeartbeat)
		m, err := att.Next(hctx)
		quiet := err != nil && hctx.Err() != nil && ctx.Err() == nil
		hcancel()
		switch {
		case err == nil:
			if buf, err = appendMessage(buf[:0], m); err != nil {
				return "encode: " + err.Error()
			}
		case quiet:
			buf = appendFrame(buf[:0], frameHeartbeat, nil)
		case ctx.Err() != nil:
			cause := context.Cause(ctx)
			if !errors.Is(cause, context.Canceled) {
				return cause.Error()
			}
			// The server is stopping: say so, briefly.
			buf, _ = appendMessage(buf[:0], labctl.ConsoleMessage{Notice: &labctl.ConsoleNotice{
				Kind: labctl.NoticeClosed, Text: "the daemon is stopping", At: time.Now()}})
			conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			conn.Write(buf)
			return "the daemon is stopping"
		default:
			if errors.Is(err, labctl.ErrConsoleClosed) {
				return "attachment closed"
			}
			return err.Error()
		}
		conn.SetWriteDeadline(time.Now().Add(consoleWriteTimeout))
		if _, err := conn.Write(buf); err != nil {
			return "write to the viewer: " + err.Error()
		}
	}
}

// headerHas reports whether a comma-separated header has token (ASCII
// case-insensitive).
func headerHas(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// consoleOptionsFrom reads an attach request's query.
func consoleOptionsFrom(q url.Values) (labctl.ConsoleOptions, error) {
	var o labctl.ConsoleOptions
	o.Who = q.Get("who")
	if len(o.Who) > 64 || strings.IndexFunc(o.Who, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return o, fmt.Errorf("%w: who %q: want at most 64 printable characters", labctl.ErrInvalid, o.Who)
	}
	ints := []struct {
		key string
		max int
		v   *int
	}{{"replay", maxReplayLines, &o.Replay}, {"rows", 0xffff, &o.Window.Rows}, {"cols", 0xffff, &o.Window.Cols}}
	for _, f := range ints {
		v := q.Get(f.key)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > f.max {
			return o, fmt.Errorf("%w: %s %q: want a number from 0 to %d", labctl.ErrInvalid, f.key, v, f.max)
		}
		*f.v = n
	}
	bools := []struct {
		key string
		v   *bool
	}{{"force", &o.Force}, {"read_only", &o.ReadOnly}}
	for _, f := range bools {
		switch v := q.Get(f.key); v {
		case "", "false", "0":
		case "true", "1":
			*f.v = true
		default:
			return o, fmt.Errorf("%w: %s %q: want true or false", labctl.ErrInvalid, f.key, v)
		}
	}
	if o.Force && o.ReadOnly {
		return o, fmt.Errorf("%w: force and read_only exclude each other", labctl.ErrInvalid)
	}
	return o, nil
}

// setSendBuffer sets the kernel's send buffer of the TCP connection under
// c, which the API's listener and TLS wrap.
func setSendBuffer(c net.Conn, size int) error {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			return v.SetWriteBuffer(size)
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return fmt.Errorf("set the send buffer: %T is not a TCP connection", c)
		}
	}
}

package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/coder/websocket"

	"github.com/labctl/labctl"
)

// The browser's console: GET /api/v1/devices/{name}/console/ws (same
// query as attach) upgrades to a WebSocket carrying one attachment:
//
//	daemon → browser  binary message: console output (raw bytes)
//	                  text message: {"state": ConsoleState} or {"notice": ConsoleNotice}
//	browser → daemon  binary message: typed input
//	                  text message: {"resize": {"rows": R, "cols": C}}, {"break": true}
//	                  or {"power_cycle": true}
//
// The roles are the attach endpoint's (consoleRole): a viewer watches
// read-only. The WebSocket handshake accepts only the daemon's own
// origin, so another site's page cannot open a console with a browser's
// session.

// maxWSMessage bounds one message from the browser: a paste, or a control.
const maxWSMessage = 64 << 10

// wsControl is a text message from the browser.
type wsControl struct {
	Resize     *labctl.WindowSize `json:"resize,omitempty"`
	Break      bool               `json:"break,omitempty"`
	PowerCycle bool               `json:"power_cycle,omitempty"`
}

// wsMessage is a text message to the browser: exactly one field is set.
type wsMessage struct {
	State  *labctl.ConsoleState  `json:"state,omitempty"`
	Notice *labctl.ConsoleNotice `json:"notice,omitempty"`
}

func (s *Server) consoleWebSocket(w http.ResponseWriter, r *http.Request) {
	cs, err := s.consoleService()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	opts, err := s.viewerOptions(r, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The handshake checks Origin against Host before anything attaches.
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		s.log.Info("console websocket refused", "device", name, "remote", r.RemoteAddr, "err", err)
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxWSMessage)
	att, err := cs.AttachConsole(r.Context(), name, opts)
	if err != nil {
		conn.Close(websocket.StatusPolicyViolation, truncateReason(err.Error()))
		return
	}
	defer att.Close()
	s.log.Info("console attached", "device", name, "who", opts.Who, "caller", labctl.CallerFrom(r.Context()), "remote", r.RemoteAddr, "via", "websocket")
	why := serveConsoleWS(r.Context(), conn, att)
	s.log.Info("console detached", "device", name, "who", opts.Who, "caller", labctl.CallerFrom(r.Context()), "why", why)
}

// serveConsoleWS moves messages between the browser and att until one
// side ends, and says why it ended.
func serveConsoleWS(ctx context.Context, conn *websocket.Conn, att labctl.ConsoleAttachment) string {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		for {
			typ, p, err := conn.Read(ctx)
			if err != nil {
				cancel(fmt.Errorf("viewer: %w", err))
				return
			}
			if typ == websocket.MessageBinary {
				err = att.Input(p)
			} else {
				var c wsControl
				if err = DecodeJSON(bytes.NewReader(p), &c); err == nil {
					switch {
					case c.Resize != nil:
						err = att.Resize(*c.Resize)
					case c.Break:
						err = att.Break()
					case c.PowerCycle:
						err = att.PowerCycle()
					}
				}
			}
			if err != nil {
				cancel(err)
				return
			}
		}
	}()
	for {
		hctx, hcancel := context.WithTimeout(ctx, consoleHeartbeat)
		m, err := att.Next(hctx)
		quiet := err != nil && hctx.Err() != nil && ctx.Err() == nil
		hcancel()
		switch {
		case err == nil:
		case quiet:
			pctx, pcancel := context.WithTimeout(ctx, consoleHeartbeat)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				return "ping the viewer: " + err.Error()
			}
			continue
		case ctx.Err() != nil:
			cause := context.Cause(ctx)
			if !errors.Is(cause, context.Canceled) {
				return cause.Error()
			}
			conn.Close(websocket.StatusGoingAway, "the daemon is stopping")
			return "the daemon is stopping"
		default:
			if errors.Is(err, labctl.ErrConsoleClosed) {
				conn.Close(websocket.StatusNormalClosure, "attachment closed")
				return "attachment closed"
			}
			return err.Error()
		}
		typ, p := websocket.MessageBinary, m.Output
		if m.Output == nil {
			typ = websocket.MessageText
			if p, err = json.Marshal(wsMessage{State: m.State, Notice: m.Notice}); err != nil {
				return "encode: " + err.Error()
			}
		}
		// A tab that does not read is dropped after consoleWriteTimeout;
		// until then the broker's bounded buffer counts what it misses.
		wctx, wcancel := context.WithTimeout(ctx, consoleWriteTimeout)
		err = conn.Write(wctx, typ, p)
		wcancel()
		if err != nil {
			return "write to the viewer: " + err.Error()
		}
	}
}

// truncateReason fits a close reason in a control frame (123 bytes).
func truncateReason(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}

package api

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/labctl/labctl"
)

const (
	// consoleHandshake bounds the Upgrade request when ctx has no deadline.
	consoleHandshake = 30 * time.Second
	// consoleSilence: a console connection without a frame for this long
	// (three heartbeats) is taken for dead.
	consoleSilence = 3 * consoleHeartbeat
	// consoleSendTimeout bounds sending one frame to the daemon.
	consoleSendTimeout = 30 * time.Second
)

// Consoles lists every node's console.
func (c *Client) Consoles(ctx context.Context) ([]labctl.ConsoleInfo, error) {
	var list []labctl.ConsoleInfo
	err := c.do(ctx, false, "GET", "/api/v1/consoles", nil, nil, &list)
	return list, err
}

// Console reports one node's console.
func (c *Client) Console(ctx context.Context, node string) (labctl.ConsoleInfo, error) {
	var info labctl.ConsoleInfo
	err := c.do(ctx, false, "GET", devicePath(node, "/console"), nil, nil, &info)
	return info, err
}

// AttachConsole attaches to the node's console through the daemon: an
// HTTP/1.1 Upgrade to ConsoleProtocol, then frames both ways. ctx bounds
// the attaching only (30 s if it has no deadline). Errors before the
// upgrade are *Error values like every other request's (errors.Is works:
// ErrNotFound for an unknown node). HTTP proxies are not used.
func (c *Client) AttachConsole(ctx context.Context, node string, opts labctl.ConsoleOptions) (labctl.ConsoleAttachment, error) {
	q := url.Values{}
	if opts.Who != "" {
		q.Set("who", opts.Who)
	}
	if opts.Replay > 0 {
		q.Set("replay", strconv.Itoa(opts.Replay))
	}
	if opts.Force {
		q.Set("force", "true")
	}
	if opts.ReadOnly {
		q.Set("read_only", "true")
	}
	if opts.Window.Rows > 0 || opts.Window.Cols > 0 {
		q.Set("rows", strconv.Itoa(opts.Window.Rows))
		q.Set("cols", strconv.Itoa(opts.Window.Cols))
	}
	u := *c.base
	u.Path += devicePath(node, "/console/attach")
	u.RawQuery = q.Encode()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, consoleHandshake)
		defer cancel()
	}
	conn, err := c.dialConsole(ctx, &u)
	if err != nil {
		return nil, c.unreachable(": console "+node, err)
	}
	// A ctx that ends during the handshake interrupts it.
	interrupted := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (labctl.ConsoleAttachment, error) {
		interrupted()
		conn.Close()
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, fmt.Errorf("daemon %s: console %s: %w", c.base.Host, node, err)
	}
	req := &http.Request{Method: "GET", URL: &u, Host: u.Host, Header: http.Header{}}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", ConsoleProtocol)
	c.authorize(ctx, req.Header)
	if err := req.Write(conn); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, 16<<10)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		err := responseError(resp)
		interrupted()
		conn.Close()
		return nil, err
	}
	if !headerHas(resp.Header, "Upgrade", ConsoleProtocol) {
		return fail(fmt.Errorf("the daemon switched to %q, not %s", resp.Header.Get("Upgrade"), ConsoleProtocol))
	}
	if !interrupted() {
		return fail(ctx.Err())
	}
	conn.SetDeadline(time.Time{})
	cc := &consoleConn{conn: conn, host: c.base.Host, msgs: make(chan labctl.ConsoleMessage), done: make(chan struct{}), closed: make(chan struct{})}
	go cc.read(br)
	return cc, nil
}

// dialConsole opens the connection a console runs on: TCP with small
// socket buffers (see consoleSocketBuffer), TLS for https.
func (c *Client) dialConsole(ctx context.Context, u *url.URL) (net.Conn, error) {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, err
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetReadBuffer(consoleSocketBuffer)
	}
	if u.Scheme != "https" {
		return conn, nil
	}
	cfg := &tls.Config{}
	if c.tls != nil {
		cfg = c.tls.Clone()
	}
	cfg.ServerName = u.Hostname()
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

// consoleConn is the client's side of a console connection.
type consoleConn struct {
	conn net.Conn
	host string
	msgs chan labctl.ConsoleMessage
	done chan struct{} // closed when read stops; err says why
	err  error

	wmu  sync.Mutex
	wbuf []byte

	closeOnce sync.Once
	closed    chan struct{}
}

// read decodes the daemon's frames into messages until the connection
// ends.
func (cc *consoleConn) read(br *bufio.Reader) {
	defer close(cc.done)
	fr := newFrameReader(br)
	closing := false
	for {
		if err := cc.waitFrame(br); err != nil {
			cc.err = cc.readErr(err, closing)
			return
		}
		f, err := fr.next()
		if err != nil {
			cc.err = cc.readErr(err, closing)
			return
		}
		m, ok, err := decodeMessage(f)
		if err != nil {
			cc.err = fmt.Errorf("daemon %s: %w", cc.host, err)
			return
		}
		if !ok {
			continue
		}
		if m.Notice != nil && m.Notice.Kind == labctl.NoticeClosed {
			closing = true
		}
		select {
		case cc.msgs <- m:
		case <-cc.closed:
			cc.err = labctl.ErrConsoleClosed
			return
		}
	}
}

// waitFrame waits until a frame starts arriving, for at most
// consoleSilence (the daemon sends heartbeats). A process that was stopped
// (^Z, SIGSTOP) for longer finds its deadline passed when it runs again:
// it then gets one more short wait, in which what arrived meanwhile is
// read.
func (cc *consoleConn) waitFrame(br *bufio.Reader) error {
	if br.Buffered() > 0 {
		return nil
	}
	cc.conn.SetReadDeadline(time.Now().Add(consoleSilence))
	_, err := br.Peek(1)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		cc.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = br.Peek(1)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("no word from the daemon for %s", consoleSilence)
		}
	}
	cc.conn.SetReadDeadline(time.Time{})
	return err
}

func (cc *consoleConn) readErr(err error, closing bool) error {
	select {
	case <-cc.closed:
		return labctl.ErrConsoleClosed
	default:
	}
	if errors.Is(err, io.EOF) && closing {
		return labctl.ErrConsoleClosed
	}
	if errors.Is(err, io.EOF) {
		err = errors.New("the daemon closed the console connection")
	}
	return fmt.Errorf("daemon %s: %w", cc.host, err)
}

// Next implements ConsoleAttachment.
func (cc *consoleConn) Next(ctx context.Context) (labctl.ConsoleMessage, error) {
	select {
	case m := <-cc.msgs:
		return m, nil
	case <-cc.done:
		return labctl.ConsoleMessage{}, cc.err
	case <-ctx.Done():
		return labctl.ConsoleMessage{}, ctx.Err()
	}
}

// send writes one frame built by build.
func (cc *consoleConn) send(build func([]byte) []byte) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	select {
	case <-cc.closed:
		return labctl.ErrConsoleClosed
	case <-cc.done:
		if cc.err != nil {
			return cc.err
		}
		return labctl.ErrConsoleClosed
	default:
	}
	cc.wbuf = build(cc.wbuf[:0])
	cc.conn.SetWriteDeadline(time.Now().Add(consoleSendTimeout))
	if _, err := cc.conn.Write(cc.wbuf); err != nil {
		return fmt.Errorf("daemon %s: console connection: %w", cc.host, err)
	}
	return nil
}

// Input implements ConsoleAttachment.
func (cc *consoleConn) Input(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	return cc.send(func(b []byte) []byte { return appendFrames(b, frameInput, p) })
}

// Resize implements ConsoleAttachment.
func (cc *consoleConn) Resize(w labctl.WindowSize) error {
	return cc.send(func(b []byte) []byte { return appendResize(b, w) })
}

// Break implements ConsoleAttachment.
func (cc *consoleConn) Break() error {
	return cc.send(func(b []byte) []byte { return appendFrame(b, frameBreak, nil) })
}

// PowerCycle implements ConsoleAttachment.
func (cc *consoleConn) PowerCycle() error {
	return cc.send(func(b []byte) []byte { return appendFrame(b, framePower, nil) })
}

// Close implements ConsoleAttachment.
func (cc *consoleConn) Close() error {
	cc.closeOnce.Do(func() {
		close(cc.closed)
		cc.conn.Close()
	})
	return nil
}

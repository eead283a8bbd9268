package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
)

// serveWS runs the API with an admin and a viewer token.
func serveWS(t *testing.T, svc labctl.Service) string {
	t.Helper()
	srv, err := api.NewServer(svc, api.Config{Addr: "127.0.0.1:0", Tokens: []api.Token{
		{Name: "ci", Secret: goodToken, Role: labctl.RoleAdmin},
		{Name: "vera", Secret: "viewer-token-1234", Role: labctl.RoleViewer},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		srv.Serve(ctx)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + srv.Addr().String()
}

func dialWS(t *testing.T, url, token, origin string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{"Authorization": {"Bearer " + token}}
	if origin != "" {
		h.Set("Origin", origin)
	}
	return websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/api/v1/devices/node1/console/ws?replay=20&rows=30&cols=100", &websocket.DialOptions{HTTPHeader: h})
}

func readWS(t *testing.T, c *websocket.Conn) (websocket.MessageType, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, p, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, p
}

// The browser's console transport: output as binary messages, states and
// notices as JSON; input, resize, break and power cycle reach the broker;
// a viewer attaches read-only whatever it asks; another origin's page
// cannot open it.
func TestConsoleOverWebSocket(t *testing.T) {
	svc := &consoleService{atts: make(chan *fakeAttachment, 4)}
	url := serveWS(t, svc)

	c, _, err := dialWS(t, url, goodToken, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	att := <-svc.atts
	if att.caller != "ci" || att.opts.Replay != 20 || att.opts.ReadOnly || att.opts.Window != (labctl.WindowSize{Rows: 30, Cols: 100}) {
		t.Errorf("attached as %q with %+v", att.caller, att.opts)
	}
	att.msgs <- labctl.ConsoleMessage{State: &labctl.ConsoleState{Node: "node1", State: labctl.ConsoleOpen, Write: true, You: "ci"}}
	att.msgs <- labctl.ConsoleMessage{Output: []byte("\x1b[32mhello\x1b[0m\r\n")}
	att.msgs <- labctl.ConsoleMessage{Notice: &labctl.ConsoleNotice{Kind: labctl.NoticeMissed, Text: "missed", Missed: 42}}
	if typ, p := readWS(t, c); typ != websocket.MessageText || !strings.Contains(string(p), `"state":{"node":"node1","target":"","state":"open"`) {
		t.Errorf("first message %v %s, want the state", typ, p)
	}
	if typ, p := readWS(t, c); typ != websocket.MessageBinary || string(p) != "\x1b[32mhello\x1b[0m\r\n" {
		t.Errorf("second message %v %q, want the output as it is", typ, p)
	}
	typ, p := readWS(t, c)
	var m struct{ Notice labctl.ConsoleNotice }
	if typ != websocket.MessageText || json.Unmarshal(p, &m) != nil || m.Notice.Missed != 42 {
		t.Errorf("third message %v %s, want the missed notice", typ, p)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, w := range []struct {
		typ websocket.MessageType
		p   string
	}{
		{websocket.MessageBinary, "uname -a\r"},
		{websocket.MessageText, `{"resize":{"rows":40,"cols":120}}`},
		{websocket.MessageText, `{"break":true}`},
		{websocket.MessageText, `{"power_cycle":true}`},
	} {
		if err := c.Write(ctx, w.typ, []byte(w.p)); err != nil {
			t.Fatal(err)
		}
	}
	want := `input "uname -a\r" resize 120x40 break power`
	for att.recorded() != want && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if got := att.recorded(); got != want {
		t.Errorf("the broker got %q, want %q", got, want)
	}
	// A control the daemon does not know ends the connection.
	c.Write(ctx, websocket.MessageText, []byte(`{"reboot":true}`))
	if _, _, err := c.Read(ctx); err == nil {
		t.Error("an unknown control did not end the connection")
	}
	select {
	case <-att.closed:
	case <-ctx.Done():
		t.Error("the attachment was not closed after the connection ended")
	}

	// A viewer attaches read-only even when it does not ask to.
	v, _, err := dialWS(t, url, "viewer-token-1234", url)
	if err != nil {
		t.Fatal(err)
	}
	defer v.CloseNow()
	if va := <-svc.atts; va.caller != "vera" || !va.opts.ReadOnly {
		t.Errorf("viewer attached as %q with %+v, want read-only", va.caller, va.opts)
	}

	// Another origin's page: refused before anything attaches.
	_, resp, err := dialWS(t, url, goodToken, "http://evil.example")
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("dial from another origin: %v (%v), want 403", err, resp)
	}
	select {
	case a := <-svc.atts:
		t.Errorf("another origin attached: %+v", a.opts)
	default:
	}
}

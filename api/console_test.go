package api_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
)

// consoleService is a fakeService with a console broker: one node, node1,
// whose attachments the test drives.
type consoleService struct {
	fakeService
	atts chan *fakeAttachment
}

func (f *consoleService) AttachConsole(ctx context.Context, node string, o labctl.ConsoleOptions) (labctl.ConsoleAttachment, error) {
	if node != "node1" {
		return nil, fmt.Errorf("%w: no device %q", labctl.ErrNotFound, node)
	}
	a := &fakeAttachment{caller: labctl.CallerFrom(ctx), opts: o, msgs: make(chan labctl.ConsoleMessage, 100), closed: make(chan struct{})}
	f.atts <- a
	return a, nil
}

func (f *consoleService) Consoles(ctx context.Context) ([]labctl.ConsoleInfo, error) {
	return []labctl.ConsoleInfo{{Node: "node1", State: labctl.ConsoleOpen, Writer: "job 3"}}, nil
}

func (f *consoleService) Console(ctx context.Context, node string) (labctl.ConsoleInfo, error) {
	if node != "node1" {
		return labctl.ConsoleInfo{}, fmt.Errorf("%w: no device %q", labctl.ErrNotFound, node)
	}
	return labctl.ConsoleInfo{Node: "node1", State: labctl.ConsoleDown, Error: "BMC gone"}, nil
}

// fakeAttachment is the daemon's side of one viewer: the test puts
// messages in msgs and reads what the viewer did from calls.
type fakeAttachment struct {
	caller string
	opts   labctl.ConsoleOptions
	msgs   chan labctl.ConsoleMessage
	closed chan struct{}
	once   sync.Once

	mu    sync.Mutex
	calls []string
}

func (a *fakeAttachment) record(s string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, s)
	return nil
}

func (a *fakeAttachment) recorded() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.calls, " ")
}

func (a *fakeAttachment) Next(ctx context.Context) (labctl.ConsoleMessage, error) {
	select {
	case m, ok := <-a.msgs:
		if !ok {
			return labctl.ConsoleMessage{}, labctl.ErrConsoleClosed
		}
		return m, nil
	case <-a.closed:
		return labctl.ConsoleMessage{}, labctl.ErrConsoleClosed
	case <-ctx.Done():
		return labctl.ConsoleMessage{}, ctx.Err()
	}
}
func (a *fakeAttachment) Input(p []byte) error { return a.record(fmt.Sprintf("input %q", p)) }
func (a *fakeAttachment) Resize(w labctl.WindowSize) error {
	return a.record(fmt.Sprintf("resize %dx%d", w.Cols, w.Rows))
}
func (a *fakeAttachment) Break() error      { return a.record("break") }
func (a *fakeAttachment) PowerCycle() error { return a.record("power") }
func (a *fakeAttachment) Close() error {
	a.once.Do(func() { close(a.closed) })
	return nil
}

// serveAPI runs srv on 127.0.0.1 until the returned stop is called.
func serveAPI(t *testing.T, svc labctl.Service) (url string, stop func()) {
	t.Helper()
	srv, err := api.NewServer(svc, api.Config{Addr: "127.0.0.1:0", Tokens: []api.Token{{Name: "ci", Secret: goodToken, Role: labctl.RoleAdmin}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		srv.Serve(ctx)
		close(done)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return "http://" + srv.Addr().String(), stop
}

// nextOf reads messages until one satisfies want.
func nextOf(t *testing.T, a labctl.ConsoleAttachment, what string, want func(labctl.ConsoleMessage) bool) labctl.ConsoleMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		m, err := a.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if want(m) {
			return m
		}
	}
}

// A console attachment over the network: options and the caller reach
// the broker; output (also more than a frame), notices and states reach
// the viewer; input, window sizes, breaks and power cycles reach the
// broker in order; closing either end ends the other; the server
// stopping says so.
func TestConsoleOverHTTP(t *testing.T) {
	svc := &consoleService{atts: make(chan *fakeAttachment, 4)}
	url, stop := serveAPI(t, svc)
	c, err := api.NewClient(url, goodToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := labctl.ConsoleOptions{Who: "alice@laptop", Replay: 20, Force: true, Window: labctl.WindowSize{Rows: 50, Cols: 200}}
	viewer, err := c.AttachConsole(ctx, "node1", opts)
	if err != nil {
		t.Fatal(err)
	}
	broker := <-svc.atts
	wantOpts := opts
	wantOpts.Who = "ci (alice@laptop)" // the token's name first: a client cannot pass for someone else
	if broker.opts != wantOpts || broker.caller != "ci" {
		t.Errorf("the broker got %+v from %q, want %+v from ci", broker.opts, broker.caller, wantOpts)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160 KB: three frames
	broker.msgs <- labctl.ConsoleMessage{Output: []byte("hello\r\n")}
	broker.msgs <- labctl.ConsoleMessage{Output: big}
	broker.msgs <- labctl.ConsoleMessage{Notice: &labctl.ConsoleNotice{Kind: labctl.NoticeWriter, Text: "you have write"}}
	broker.msgs <- labctl.ConsoleMessage{State: &labctl.ConsoleState{Node: "node1", Write: true, Viewers: 1}}
	var out []byte
	m := nextOf(t, viewer, "the notice", func(m labctl.ConsoleMessage) bool {
		out = append(out, m.Output...)
		return m.Notice != nil
	})
	if !bytes.Equal(out, append([]byte("hello\r\n"), big...)) || m.Notice.Text != "you have write" {
		t.Errorf("viewer got %d bytes and notice %+v", len(out), m.Notice)
	}
	if m := nextOf(t, viewer, "the state", func(m labctl.ConsoleMessage) bool { return true }); m.State == nil || !m.State.Write {
		t.Errorf("state = %+v", m.State)
	}

	viewer.Input([]byte("ls\r"))
	viewer.Resize(labctl.WindowSize{Rows: 40, Cols: 100})
	viewer.Break()
	viewer.PowerCycle()
	viewer.Input([]byte("~."))
	want := `input "ls\r" resize 100x40 break power input "~."`
	deadline := time.Now().Add(10 * time.Second)
	for broker.recorded() != want {
		if time.Now().After(deadline) {
			t.Fatalf("the broker got %s, want %s", broker.recorded(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// The viewer detaches: the broker's attachment is closed.
	viewer.Close()
	select {
	case <-broker.closed:
	case <-time.After(10 * time.Second):
		t.Error("the broker's attachment is not closed after the viewer detached")
	}
	if err := viewer.Input([]byte("x")); !errors.Is(err, labctl.ErrConsoleClosed) {
		t.Errorf("Input after Close: %v", err)
	}

	// The broker ends an attachment: the viewer hears ErrConsoleClosed
	// after the last notice.
	viewer, err = c.AttachConsole(ctx, "node1", labctl.ConsoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	broker = <-svc.atts
	broker.msgs <- labctl.ConsoleMessage{Notice: &labctl.ConsoleNotice{Kind: labctl.NoticeClosed, Text: "the console broker stopped"}}
	close(broker.msgs)
	nextOf(t, viewer, "the closing notice", func(m labctl.ConsoleMessage) bool { return m.Notice != nil })
	if _, err := viewer.Next(ctx); !errors.Is(err, labctl.ErrConsoleClosed) {
		t.Errorf("after the broker ended it: %v, want ErrConsoleClosed", err)
	}

	// The server stops: the viewer is told.
	viewer, err = c.AttachConsole(ctx, "node1", labctl.ConsoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	<-svc.atts
	stop()
	m = nextOf(t, viewer, "the daemon stopping", func(m labctl.ConsoleMessage) bool { return m.Notice != nil })
	if m.Notice.Kind != labctl.NoticeClosed || m.Notice.Text != "the daemon is stopping" {
		t.Errorf("notice = %+v", m.Notice)
	}
	if _, err := viewer.Next(ctx); !errors.Is(err, labctl.ErrConsoleClosed) {
		t.Errorf("after the daemon stopped: %v, want ErrConsoleClosed", err)
	}
}

// Errors before the upgrade are the API's errors; the listings work; a
// Service without consoles has none.
func TestConsoleEndpoints(t *testing.T) {
	svc := &consoleService{atts: make(chan *fakeAttachment, 4)}
	url, _ := serveAPI(t, svc)
	c, _ := api.NewClient(url, goodToken, nil)
	ctx := context.Background()
	if _, err := c.AttachConsole(ctx, "node9", labctl.ConsoleOptions{}); !errors.Is(err, labctl.ErrNotFound) {
		t.Errorf("attach to an unknown node: %v", err)
	}
	if _, err := c.AttachConsole(ctx, "node1", labctl.ConsoleOptions{Force: true, ReadOnly: true}); !errors.Is(err, labctl.ErrInvalid) {
		t.Errorf("attach --force --read-only: %v", err)
	}
	bad, _ := api.NewClient(url, "not-the-token", nil)
	if _, err := bad.AttachConsole(ctx, "node1", labctl.ConsoleOptions{}); !errors.Is(err, labctl.ErrUnauthorized) {
		t.Errorf("attach with a wrong token: %v", err)
	}
	req, _ := http.NewRequest("GET", url+"/api/v1/devices/node1/console/attach", nil)
	req.Header.Set("Authorization", "Bearer "+goodToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Upgrade") != api.ConsoleProtocol {
		t.Errorf("attach without Upgrade: %s, Upgrade %q", resp.Status, resp.Header.Get("Upgrade"))
	}
	list, err := c.Consoles(ctx)
	if err != nil || len(list) != 1 || list[0].Writer != "job 3" {
		t.Errorf("Consoles = %+v, %v", list, err)
	}
	info, err := c.Console(ctx, "node1")
	if err != nil || info.State != labctl.ConsoleDown || info.Error != "BMC gone" {
		t.Errorf("Console = %+v, %v", info, err)
	}
	if _, err := c.Console(ctx, "node9"); !errors.Is(err, labctl.ErrNotFound) {
		t.Errorf("Console of an unknown node: %v", err)
	}

	plain, _ := serveAPI(t, &fakeService{})
	pc, _ := api.NewClient(plain, goodToken, nil)
	if _, err := pc.Consoles(ctx); !errors.Is(err, labctl.ErrNotFound) {
		t.Errorf("Consoles of a service without consoles: %v", err)
	}
	if _, err := pc.AttachConsole(ctx, "node1", labctl.ConsoleOptions{}); !errors.Is(err, labctl.ErrNotFound) {
		t.Errorf("attach on a service without consoles: %v", err)
	}
}

// A viewer's token attaches read-only whatever it asks, and may not take
// write from someone (403 naming the role); an operator attaches as asked.
func TestConsoleRoles(t *testing.T) {
	svc := &consoleService{atts: make(chan *fakeAttachment, 4)}
	s, err := api.NewServer(svc, api.Config{Tokens: []api.Token{
		{Name: "vic", Secret: "viewer-token-123", Role: labctl.RoleViewer},
		{Name: "ops", Secret: "operator-token-1", Role: labctl.RoleOperator},
	}})
	if err != nil {
		t.Fatal(err)
	}
	attach := func(token, query string) int {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, "GET", "/api/v1/devices/node1/console/attach?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", api.ConsoleProtocol)
		w := httptest.NewRecorder() // cannot be hijacked: the handler gives up after attaching
		s.ServeHTTP(w, req)
		return w.Code
	}
	if code := attach("viewer-token-123", "force=true"); code != http.StatusForbidden {
		t.Errorf("a viewer taking write: status %d, want 403", code)
	}
	attach("viewer-token-123", "who=mallory")
	if a := <-svc.atts; !a.opts.ReadOnly || a.opts.Who != "vic (mallory)" {
		t.Errorf("a viewer attached with %+v, want read-only as vic (mallory)", a.opts)
	}
	attach("operator-token-1", "force=true")
	if a := <-svc.atts; a.opts.ReadOnly || !a.opts.Force || a.opts.Who != "ops" {
		t.Errorf("an operator attached with %+v, want force as ops", a.opts)
	}
}

package web

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/sol"
)

// fakeService answers the few API calls these tests make; any other
// would panic (a 500).
type fakeService struct {
	labctl.Service
	mu    sync.Mutex
	calls []string // "maintenance node1 by alice"
	jobs  []labctl.Job
	state string // node1's state; "" is idle
	job   int64  // the job running on node1
	// Follow sends log, then waits for end to close and sends the job.
	log string
	end chan struct{}
}

func (f *fakeService) Job(ctx context.Context, id int64) (labctl.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range f.jobs {
		if j.ID == id {
			return j, nil
		}
	}
	return labctl.Job{}, fmt.Errorf("%w: job %d", labctl.ErrNotFound, id)
}

func (f *fakeService) Follow(ctx context.Context, id int64, opts labctl.FollowOptions, send func(labctl.Event) error) error {
	if err := send(labctl.Event{Log: f.log, Offset: opts.Offset}); err != nil {
		return err
	}
	select {
	case <-f.end:
	case <-ctx.Done():
		return ctx.Err()
	}
	j, err := f.Job(ctx, id)
	if err != nil {
		return err
	}
	return send(labctl.Event{End: &j})
}

func (f *fakeService) Devices(ctx context.Context) ([]labctl.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []labctl.Device{{Name: "node1", State: cmp.Or(f.state, labctl.DeviceIdle), Job: f.job}}, nil
}

func (f *fakeService) Device(ctx context.Context, name string) (labctl.Device, error) {
	if name != "node1" {
		return labctl.Device{}, fmt.Errorf("%w: no device %q", labctl.ErrNotFound, name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return labctl.Device{Name: "node1", State: cmp.Or(f.state, labctl.DeviceIdle), Job: f.job,
		HealthHistory: []labctl.Health{{OK: true, Detail: "history"}}}, nil
}

// Jobs lists f.jobs (oldest first) as the daemon does: states, before,
// the newest limit.
func (f *fakeService) Jobs(ctx context.Context, filter labctl.JobFilter) ([]labctl.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []labctl.Job
	for _, j := range f.jobs {
		if (len(filter.States) == 0 || slices.Contains(filter.States, j.State)) && (filter.Before == 0 || j.ID < filter.Before) &&
			(filter.Device == "" || j.Device == filter.Device) {
			out = append(out, j)
		}
	}
	limit := cmp.Or(filter.Limit, 100)
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

func (f *fakeService) Maintenance(ctx context.Context, name, reason string) (labctl.Device, error) {
	f.mu.Lock()
	f.calls = append(f.calls, "maintenance "+name+" by "+labctl.CallerFrom(ctx))
	f.mu.Unlock()
	return labctl.Device{Name: name, State: labctl.DeviceMaintenance}, nil
}

func (f *fakeService) Audit(ctx context.Context, _ labctl.AuditFilter) ([]labctl.AuditEntry, error) {
	return nil, nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type harness struct {
	ui    *UI
	svc   *fakeService
	srv   *httptest.Server
	clock *clock
}

var tokens = []api.Token{
	{Name: "alice", Secret: "operator-secret", Role: labctl.RoleOperator},
	{Name: "bob", Secret: "viewer-secret", Role: labctl.RoleViewer},
}

func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{svc: &fakeService{}, clock: &clock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}}
	cfg.Tokens = tokens
	cfg.Now = h.clock.now
	h.ui = New(cfg)
	h.ui.Hub().SetLab(h.svc)
	srv, err := api.NewServer(h.svc, api.Config{Tokens: tokens, Browser: h.ui, Routes: h.ui.Routes()})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewServer(srv)
	t.Cleanup(h.srv.Close)
	return h
}

// browser is a client with a cookie jar, as a browser on the daemon's
// own pages: Origin is the daemon's.
func (h *harness) browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (h *harness) login(t *testing.T, c *http.Client, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", h.srv.URL+"/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", h.srv.URL)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func (h *harness) session(t *testing.T, c *http.Client) (SessionInfo, int) {
	t.Helper()
	resp, err := c.Get(h.srv.URL + "/ui/session")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s SessionInfo
	json.NewDecoder(resp.Body).Decode(&s)
	return s, resp.StatusCode
}

func (h *harness) post(t *testing.T, c *http.Client, path, origin, csrf string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", h.srv.URL+path, strings.NewReader(`{"reason":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if csrf != "" {
		req.Header.Set(CSRFHeader, csrf)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestLoginSetsAStrictHttpOnlyCookie(t *testing.T) {
	h := start(t, Config{})
	c := h.browser(t)
	resp := h.login(t, c, "operator-secret")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("login: %s to %q, want 303 to /", resp.Status, resp.Header.Get("Location"))
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies %v, want one", cookies)
	}
	ck := cookies[0]
	if ck.Name != CookieName || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || ck.Path != "/" {
		t.Errorf("cookie %+v: want %s, HttpOnly, SameSite=Strict, not Secure without TLS, Path /", ck, CookieName)
	}
	if strings.Contains(ck.Value, "operator-secret") {
		t.Error("the cookie holds the token")
	}
	s, code := h.session(t, c)
	if code != 200 || s.Name != "alice" || s.Role != labctl.RoleOperator || len(s.CSRF) < 32 {
		t.Errorf("session = %d %+v, want alice, operator, a CSRF token", code, s)
	}
	// The page itself now loads (before the login it sends to /login).
	r, err := c.Get(h.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || !strings.Contains(string(b), "/app.js") {
		t.Errorf("GET / after login: %s %.100q", r.Status, b)
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
}

func TestLoginSecureCookieWithTLS(t *testing.T) {
	h := start(t, Config{TLS: true})
	c := h.browser(t)
	// The test server is plain HTTP; the origin a TLS daemon checks is https.
	req, _ := http.NewRequest("POST", h.srv.URL+"/login", strings.NewReader("token=operator-secret"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", strings.Replace(h.srv.URL, "http:", "https:", 1))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure {
		t.Errorf("cookies %v: want one, Secure", resp.Cookies())
	}
}

func TestLoginRefusals(t *testing.T) {
	h := start(t, Config{})
	c := h.browser(t)
	if resp := h.login(t, c, "wrong-token"); resp.Header.Get("Location") != "/login?failed=1" || len(resp.Cookies()) != 0 {
		t.Errorf("wrong token: %s %q cookies %v", resp.Status, resp.Header.Get("Location"), resp.Cookies())
	}
	// Another site's form logging the browser in as someone.
	req, _ := http.NewRequest("POST", h.srv.URL+"/login", strings.NewReader("token=operator-secret"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("login from another origin: %s cookies %v, want 403 and none", resp.Status, resp.Cookies())
	}
	// The token in the URL is refused, not used.
	req, _ = http.NewRequest("POST", h.srv.URL+"/login?token=operator-secret", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || len(resp.Cookies()) != 0 {
		t.Errorf("token in the URL: %s, want 400 and no cookie", resp.Status)
	}
	if resp, _ := c.Get(h.srv.URL + "/"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("GET / without a session: %s %q, want a redirect to /login", resp.Status, resp.Header.Get("Location"))
	}
}

func TestCSRF(t *testing.T) {
	h := start(t, Config{})
	c := h.browser(t)
	h.login(t, c, "operator-secret")
	s, _ := h.session(t, c)
	const path = "/api/v1/devices/node1/maintenance"
	tests := []struct {
		name, origin, csrf string
		want               int
	}{
		{"no CSRF token", h.srv.URL, "", http.StatusForbidden},
		{"wrong CSRF token", h.srv.URL, s.CSRF + "x", http.StatusForbidden},
		{"another origin with the token", "http://127.0.0.1:1", s.CSRF, http.StatusForbidden},
		{"another origin, no token", "http://evil.example", "", http.StatusForbidden},
		{"own origin and token", h.srv.URL, s.CSRF, http.StatusOK},
		{"no Origin but the token (a non-browser client)", "", s.CSRF, http.StatusOK},
	}
	for _, tt := range tests {
		code, body := h.post(t, c, path, tt.origin, tt.csrf)
		if code != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, code, body, tt.want)
		}
	}
	if len(h.svc.calls) != 2 || h.svc.calls[0] != "maintenance node1 by alice" {
		t.Errorf("calls %q, want two by alice", h.svc.calls)
	}
	// GETs need no token.
	r, err := c.Get(h.srv.URL + "/api/v1/devices")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("GET devices with the session: %s", r.Status)
	}
}

func TestRolesApplyToSessions(t *testing.T) {
	h := start(t, Config{})
	c := h.browser(t)
	h.login(t, c, "viewer-secret")
	s, _ := h.session(t, c)
	code, body := h.post(t, c, "/api/v1/devices/node1/maintenance", h.srv.URL, s.CSRF)
	if code != http.StatusForbidden || !strings.Contains(body, "needs role operator") {
		t.Errorf("viewer's maintenance: %d %s, want 403 naming the role", code, body)
	}
	if len(h.svc.calls) != 0 {
		t.Errorf("calls %q", h.svc.calls)
	}
	r, _ := c.Get(h.srv.URL + "/api/v1/audit")
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Errorf("viewer's audit: %s, want 403", r.Status)
	}
}

func TestSessionExpiryAndLogout(t *testing.T) {
	h := start(t, Config{SessionTTL: time.Hour})
	c := h.browser(t)
	h.login(t, c, "operator-secret")
	h.clock.add(59 * time.Minute)
	if _, code := h.session(t, c); code != 200 {
		t.Fatalf("session after 59m: %d", code)
	}
	h.clock.add(time.Minute)
	if _, code := h.session(t, c); code != http.StatusUnauthorized {
		t.Errorf("session after 1h: %d, want 401", code)
	}
	r, _ := c.Get(h.srv.URL + "/api/v1/devices")
	r.Body.Close()
	if r.StatusCode != http.StatusUnauthorized {
		t.Errorf("API after expiry: %s, want 401", r.Status)
	}
	if n := h.ui.sessions.count(); n != 0 {
		t.Errorf("%d sessions kept after expiry", n)
	}

	h.login(t, c, "operator-secret")
	s, _ := h.session(t, c)
	req, _ := http.NewRequest("POST", h.srv.URL+"/logout", nil)
	req.Header.Set("Origin", h.srv.URL)
	req.Header.Set(CSRFHeader, s.CSRF)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %s", resp.Status)
	}
	if _, code := h.session(t, c); code != http.StatusUnauthorized {
		t.Errorf("session after logout: %d", code)
	}
}

func TestSessionsAreBounded(t *testing.T) {
	h := start(t, Config{MaxSessions: 3})
	first := h.browser(t)
	h.login(t, first, "viewer-secret")
	for range 3 {
		h.clock.add(time.Second)
		h.login(t, h.browser(t), "viewer-secret")
	}
	if n := h.ui.sessions.count(); n != 3 {
		t.Errorf("%d sessions, want 3", n)
	}
	if _, code := h.session(t, first); code != http.StatusUnauthorized {
		t.Errorf("the oldest session still works (%d): a login beyond the bound should end it", code)
	}
}

// streamEvents serves s's live stream until ctx ends and returns its
// events ("KIND DATA") as the page would read them.
func streamEvents(ctx context.Context, hub *Hub, s *stream, buf int) <-chan string {
	pr, pw := io.Pipe()
	req := httptest.NewRequest("GET", "/api/v1/stream", nil).WithContext(ctx)
	go func() {
		hub.serve(&pipeWriter{h: http.Header{}, w: pw}, req, s)
		pw.Close()
	}()
	events := make(chan string, buf)
	go readEvents(pr, events)
	return events
}

// nextEvent is the stream's next event; it fails the test after 30 s.
func nextEvent(t *testing.T, events <-chan string) string {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no event in 30s")
		return ""
	}
}

// readEvents reads server-sent events from r: "event: data" each.
func readEvents(r io.Reader, out chan<- string) {
	sc := bufio.NewScanner(r)
	var ev string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			ev = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			out <- ev + " " + strings.TrimPrefix(line, "data: ")
		}
	}
	close(out)
}

// pipeWriter is a ResponseWriter whose body is read from a pipe as it is
// written.
type pipeWriter struct {
	h http.Header
	w *io.PipeWriter
}

func (p *pipeWriter) Header() http.Header         { return p.h }
func (p *pipeWriter) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeWriter) WriteHeader(int)             {}
func (p *pipeWriter) Flush()                      {}

func TestStreamTellsASlowTabWhatItMissed(t *testing.T) {
	hub := NewHub(4, 10)
	s, err := hub.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	// The tab reads nothing while 100 events happen: publishing returns at
	// once, the stream keeps 4, and counts the rest.
	for i := range 100 {
		hub.DeviceChanged(daemon.DeviceChange{Device: fmt.Sprintf("node%d", i), To: labctl.DeviceIdle, At: time.Now()})
	}
	if len(s.ch) != 4 || s.missed != 96 {
		t.Fatalf("queued %d, missed %d: want 4 and 96", len(s.ch), s.missed)
	}
	// Then it reads: hello, "missed 96" (the page reloads what it shows),
	// the 4 it kept, then what happens next.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := streamEvents(ctx, hub, s, 200)
	next := func() string { t.Helper(); return nextEvent(t, events) }
	if e := next(); !strings.HasPrefix(e, "hello ") {
		t.Fatalf("first event %q, want hello", e)
	}
	if e := next(); e != `missed {"missed":96}` {
		t.Errorf("second event %q, want missed 96", e)
	}
	for i := range 4 {
		if e := next(); !strings.HasPrefix(e, "change ") || !strings.Contains(e, fmt.Sprintf(`"node%d"`, i)) {
			t.Fatalf("event %d: %q", i, e)
		}
	}
	hub.JobEnded(daemon.JobEnd{ID: 7, Outcome: "complete", Finished: time.Now()})
	if e := next(); !strings.HasPrefix(e, "change ") || !strings.Contains(e, `"job":7`) {
		t.Errorf("then %q, want job 7's end", e)
	}
	cancel()
	hub.unsubscribe(s)
	if hub.Streams() != 0 {
		t.Errorf("%d streams left", hub.Streams())
	}
}

// TestStreamSendsTheDeviceAsItIsNow: an event about a device carries
// the device's view (as GET /api/v1/devices/NAME, without its health
// history), looked up when it is sent; a job's start carries its name
// and start, its phases are events; a console event has no view.
func TestStreamSendsTheDeviceAsItIsNow(t *testing.T) {
	svc := &fakeService{}
	hub := NewHub(16, 10)
	hub.SetLab(svc)
	s, err := hub.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer hub.unsubscribe(s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := streamEvents(ctx, hub, s, 20)
	next := func() Event {
		t.Helper()
		e := nextEvent(t, events)
		kind, data, _ := strings.Cut(e, " ")
		if kind == "hello" {
			return Event{Kind: "hello"}
		}
		var ev Event
		if kind != "change" || json.Unmarshal([]byte(data), &ev) != nil {
			t.Fatalf("event %q, want a change", e)
		}
		return ev
	}
	if e := next(); e.Kind != "hello" {
		t.Fatalf("first %+v, want hello", e)
	}

	svc.mu.Lock()
	svc.state = labctl.DeviceOffline
	svc.mu.Unlock()
	hub.DeviceChanged(daemon.DeviceChange{Device: "node1", From: labctl.DeviceIdle, To: labctl.DeviceOffline, At: time.Now()})
	e := next()
	if e.Kind != "device.state" || e.View == nil || e.View.Name != "node1" || e.View.State != labctl.DeviceOffline || e.View.HealthHistory != nil {
		t.Errorf("device change %+v, view %+v: want node1's view, offline, no history", e, e.View)
	}
	started := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	hub.JobStarted(daemon.JobStart{ID: 9, Name: "nightly", Device: "node1", Started: started})
	if e := next(); e.Kind != "job.start" || e.Job != 9 || e.Name != "nightly" || !e.At.Equal(started) || e.View == nil {
		t.Errorf("job start %+v", e)
	}
	hub.JobPhase(daemon.JobPhase{ID: 9, Device: "node1", Phase: "deploy", At: started.Add(time.Second)})
	if e := next(); e.Kind != "job.phase" || e.Job != 9 || e.State != "deploy" || !e.At.Equal(started.Add(time.Second)) || e.View == nil {
		t.Errorf("job phase %+v", e)
	}
	// A job's events carry its view; one the daemon does not know goes
	// without.
	svc.mu.Lock()
	svc.jobs = []labctl.Job{{ID: 9, Name: "nightly", State: labctl.JobQueued, Position: 2, Result: &results.Job{Outcome: "x"}}}
	svc.mu.Unlock()
	hub.JobQueued(daemon.JobQueued{ID: 9, Name: "nightly", Submitted: started})
	if e := next(); e.Kind != "job.queued" || e.Job != 9 || e.Name != "nightly" || !e.At.Equal(started) || e.View != nil ||
		e.JobView == nil || e.JobView.State != labctl.JobQueued || e.JobView.Position != 2 || e.JobView.Result != nil {
		t.Errorf("job queued %+v, view %+v", e, e.JobView)
	}
	hub.JobEnded(daemon.JobEnd{ID: 10, Outcome: "canceled", Finished: started})
	if e := next(); e.Kind != "job.end" || e.Job != 10 || e.JobView != nil {
		t.Errorf("unknown job's end %+v, want no view", e)
	}
	hub.ConsoleChanged("node1", sol.SessionLost)
	if e := next(); e.Kind != "console" || e.View != nil {
		t.Errorf("console %+v, want no view", e)
	}
	// A device the daemon does not know: the event goes without a view
	// (the page then reads the whole lab).
	hub.DeviceChanged(daemon.DeviceChange{Device: "gone", To: labctl.DeviceIdle, At: time.Now()})
	if e := next(); e.Device != "gone" || e.View != nil {
		t.Errorf("unknown device %+v, want no view", e)
	}
}

func TestStreamsAreBounded(t *testing.T) {
	h := start(t, Config{MaxStreams: 1})
	get := func() *http.Response {
		req, _ := http.NewRequest("GET", h.srv.URL+"/api/v1/stream", nil)
		req.Header.Set("Authorization", "Bearer viewer-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	first := get()
	defer first.Body.Close()
	if first.StatusCode != 200 || first.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %s %s", first.Status, first.Header.Get("Content-Type"))
	}
	second := get()
	second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a stream beyond the bound: %s, want 503", second.Status)
	}
}

func TestStreamNeedsASession(t *testing.T) {
	h := start(t, Config{})
	resp, err := http.Get(h.srv.URL + "/api/v1/stream")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("stream without a session: %s", resp.Status)
	}
}

func TestStaticAssets(t *testing.T) {
	h := start(t, Config{})
	for _, p := range []string{"/login", "/app.js", "/style.css", "/vendor/xterm.js", "/vendor/xterm.css", "/vendor/addon-fit.js"} {
		resp, err := http.Get(h.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) == 0 {
			t.Errorf("GET %s: %s, %d bytes", p, resp.Status, len(b))
		}
	}
	resp, _ := http.Get(h.srv.URL + "/nope.js")
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET /nope.js: %s", resp.Status)
	}
}

// The scripts and styles carry an ETag that changes with their content
// and must be revalidated: a page load that has them gets a 304 and no
// body; the page itself (index.html) is never stored, and names its own
// script and stylesheet by version, immutable.
func TestStaticAssetsRevalidate(t *testing.T) {
	h := start(t, Config{})
	get := func(p, etag string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", h.srv.URL+p, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	tags := map[string]string{}
	for _, p := range []string{"/app.js", "/vendor/xterm.js", "/style.css", "/login"} {
		resp, b := get(p, "")
		tag := resp.Header.Get("ETag")
		if resp.StatusCode != 200 || len(b) == 0 || !strings.HasPrefix(tag, `"`) || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("GET %s: %s, %d bytes, ETag %q, Cache-Control %q", p, resp.Status, len(b), tag, resp.Header.Get("Cache-Control"))
		}
		for q, other := range tags {
			if other == tag {
				t.Errorf("%s and %s have the same ETag %s", p, q, tag)
			}
		}
		tags[p] = tag
		resp, b = get(p, tag)
		if resp.StatusCode != http.StatusNotModified || len(b) != 0 {
			t.Errorf("GET %s with its ETag: %s, %d bytes; want 304, none", p, resp.Status, len(b))
		}
		if resp, _ = get(p, `"something-else"`); resp.StatusCode != 200 {
			t.Errorf("GET %s with another ETag: %s", p, resp.Status)
		}
	}
	// The page: logged in, never stored, no validator.
	c := h.browser(t)
	h.login(t, c, "operator-secret").Body.Close()
	resp, err := c.Get(h.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("ETag") != "" {
		t.Errorf("GET /: %s, Cache-Control %q, ETag %q", resp.Status, resp.Header.Get("Cache-Control"), resp.Header.Get("ETag"))
	}
	// It names its script and stylesheet by version: those never change
	// (a page load need not ask again); another version is revalidated.
	for _, p := range []string{"/app.js", "/style.css"} {
		ref := p + "?v=" + strings.Trim(tags[p], `"`)
		if !strings.Contains(string(page), `"`+ref+`"`) {
			t.Errorf("the page does not name %s: %s", ref, page)
		}
		resp, b := get(ref, "")
		if resp.StatusCode != 200 || len(b) == 0 || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
			t.Errorf("GET %s: %s, Cache-Control %q", ref, resp.Status, resp.Header.Get("Cache-Control"))
		}
		if resp, _ := get(p+"?v=0123", ""); resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s?v=0123 (another version): Cache-Control %q, want no-cache", p, resp.Header.Get("Cache-Control"))
		}
	}
}

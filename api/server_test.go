package api_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/results"
)

const goodToken = "s3cret-token-for-ci"

// fakeService answers every request from memory and records the callers.
type fakeService struct {
	mu      sync.Mutex
	callers []string
	fail    error // returned by every method when set
	panics  bool
}

func (f *fakeService) called(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.callers = append(f.callers, labctl.CallerFrom(ctx))
	if f.panics {
		panic("fake service panics")
	}
	return f.fail
}

func (f *fakeService) Submit(ctx context.Context, req labctl.SubmitRequest) (labctl.Job, error) {
	if err := f.called(ctx); err != nil {
		return labctl.Job{}, err
	}
	if req.Spec == "" {
		return labctl.Job{}, fmt.Errorf("%w: empty job", labctl.ErrInvalid)
	}
	return labctl.Job{ID: 7, Name: req.File, State: labctl.JobQueued, Submitter: labctl.CallerFrom(ctx)}, nil
}

func (f *fakeService) Jobs(ctx context.Context, flt labctl.JobFilter) ([]labctl.Job, error) {
	if err := f.called(ctx); err != nil {
		return nil, err
	}
	return []labctl.Job{{ID: 1, Name: strings.Join(flt.States, "+"), Device: flt.Device, Priority: fmt.Sprint(flt.Limit)}}, nil
}

func (f *fakeService) Job(ctx context.Context, id int64) (labctl.Job, error) {
	if err := f.called(ctx); err != nil {
		return labctl.Job{}, err
	}
	if id != 7 {
		return labctl.Job{}, fmt.Errorf("%w: job %d", labctl.ErrNotFound, id)
	}
	return labctl.Job{ID: 7, State: labctl.JobRunning}, nil
}

func (f *fakeService) Cancel(ctx context.Context, id int64) (labctl.Job, error) {
	if err := f.called(ctx); err != nil {
		return labctl.Job{}, err
	}
	return labctl.Job{ID: id, State: labctl.JobFinished, Outcome: "canceled"}, nil
}

func (f *fakeService) JobLog(ctx context.Context, id int64) (io.ReadCloser, error) {
	if err := f.called(ctx); err != nil {
		return nil, err
	}
	return io.NopCloser(strings.NewReader("line one\nline two\n")), nil
}

func (f *fakeService) JUnit(ctx context.Context, id int64) ([]byte, error) {
	if err := f.called(ctx); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err := (&results.Job{ID: fmt.Sprint(id), Name: "smoke", Outcome: "complete"}).WriteJUnit(&b)
	return b.Bytes(), err
}

func (f *fakeService) Artifact(ctx context.Context, id int64, name string) (io.ReadCloser, error) {
	if err := f.called(ctx); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: job %d has no artifact %q", labctl.ErrNotFound, id, name)
}

func (f *fakeService) Resubmit(ctx context.Context, id int64) (labctl.Job, error) {
	if err := f.called(ctx); err != nil {
		return labctl.Job{}, err
	}
	return labctl.Job{ID: id + 1, State: labctl.JobQueued}, nil
}

func (f *fakeService) Follow(ctx context.Context, id int64, opts labctl.FollowOptions, send func(labctl.Event) error) error {
	if err := f.called(ctx); err != nil {
		return err
	}
	if !opts.NoLog {
		if err := send(labctl.Event{Log: "hello\n", Offset: opts.Offset}); err != nil {
			return err
		}
	}
	if err := send(labctl.Event{Progress: &labctl.JobProgress{Phase: "deploy", Transfer: &labctl.Transfer{Done: 5, Total: 10, Elapsed: time.Second}}}); err != nil {
		return err
	}
	return send(labctl.Event{End: &labctl.Job{ID: id, State: labctl.JobFinished, Outcome: "complete"}})
}

func (f *fakeService) Devices(ctx context.Context) ([]labctl.Device, error) {
	if err := f.called(ctx); err != nil {
		return nil, err
	}
	return []labctl.Device{{Name: "node1", State: labctl.DeviceIdle}}, nil
}

func (f *fakeService) Device(ctx context.Context, name string) (labctl.Device, error) {
	if err := f.called(ctx); err != nil {
		return labctl.Device{}, err
	}
	return labctl.Device{Name: name, State: labctl.DeviceIdle}, nil
}

func (f *fakeService) Maintenance(ctx context.Context, name, reason string) (labctl.Device, error) {
	if err := f.called(ctx); err != nil {
		return labctl.Device{}, err
	}
	return labctl.Device{Name: name, State: labctl.DeviceMaintenance, Reason: reason}, nil
}

func (f *fakeService) Online(ctx context.Context, name string) (labctl.Device, error) {
	if err := f.called(ctx); err != nil {
		return labctl.Device{}, err
	}
	return labctl.Device{Name: name, State: labctl.DeviceIdle}, nil
}

func (f *fakeService) CheckHealth(ctx context.Context, name string) (labctl.Device, error) {
	if err := f.called(ctx); err != nil {
		return labctl.Device{}, err
	}
	return labctl.Device{Name: name, State: labctl.DeviceIdle, Health: &labctl.Health{OK: true}}, nil
}

func (f *fakeService) Reserve(ctx context.Context, name string, req labctl.ReserveRequest) (labctl.Device, error) {
	if err := f.called(ctx); err != nil {
		return labctl.Device{}, err
	}
	return labctl.Device{Name: name, State: labctl.DeviceIdle, Reservation: &labctl.Reservation{Owner: labctl.CallerFrom(ctx)}}, nil
}

func (f *fakeService) Release(ctx context.Context, name string) (labctl.Device, error) {
	if err := f.called(ctx); err != nil {
		return labctl.Device{}, err
	}
	return labctl.Device{Name: name, State: labctl.DeviceIdle}, nil
}

func (f *fakeService) Power(ctx context.Context, name string, req labctl.PowerRequest) (labctl.PowerResponse, error) {
	if err := f.called(ctx); err != nil {
		return labctl.PowerResponse{}, err
	}
	return labctl.PowerResponse{Node: name, On: req.Op != string(labctl.PowerOff)}, nil
}

func (f *fakeService) SetBootDevice(ctx context.Context, name string, req labctl.BootdevRequest) (labctl.BootdevResponse, error) {
	if err := f.called(ctx); err != nil {
		return labctl.BootdevResponse{}, err
	}
	return labctl.BootdevResponse{Node: name, Device: req.Device}, nil
}

func newServer(t testing.TB, svc labctl.Service, maxBody int64) *api.Server {
	t.Helper()
	s, err := api.NewServer(svc, api.Config{
		Tokens:  []api.Token{{Name: "ci", Secret: goodToken, Role: labctl.RoleAdmin}, {Name: "alice", Secret: "another-token-1234", Role: labctl.RoleAdmin}},
		MaxBody: maxBody,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// do sends a request to the server in-process.
func do(s http.Handler, method, path, token, contentType, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	return w
}

func TestNewServerNeedsTokens(t *testing.T) {
	if _, err := api.NewServer(&fakeService{}, api.Config{}); err == nil {
		t.Error("NewServer without tokens succeeded")
	}
	if _, err := api.NewServer(&fakeService{}, api.Config{Tokens: []api.Token{{Name: "x", Secret: "short"}}}); err == nil {
		t.Error("NewServer with a 5-character token succeeded")
	}
	_, err := api.NewServer(&fakeService{}, api.Config{Tokens: []api.Token{
		{Name: "ci", Secret: goodToken, Role: labctl.RoleAdmin}, {Name: "dashboard", Secret: goodToken, Role: labctl.RoleViewer}}})
	if err == nil || !strings.Contains(err.Error(), "tokens ci and dashboard have the same secret") {
		t.Errorf("NewServer with two tokens of one secret = %v, want refused naming both", err)
	}
}

func TestNewServerNeedsRoles(t *testing.T) {
	_, err := api.NewServer(&fakeService{}, api.Config{Tokens: []api.Token{{Name: "x", Secret: goodToken}}})
	if err == nil || !strings.Contains(err.Error(), "token x has no role") {
		t.Errorf("NewServer with a token without a role = %v", err)
	}
}

// TestRoles checks that each endpoint refuses the roles below the one it
// needs with 403 naming that role, and lets that role through.
func TestRoles(t *testing.T) {
	tokens := map[labctl.Role]string{}
	var list []api.Token
	for _, r := range labctl.Roles {
		tokens[r] = "token-of-a-" + string(r)
		list = append(list, api.Token{Name: string(r) + "1", Secret: tokens[r], Role: r})
	}
	s, err := api.NewServer(&fakeService{}, api.Config{Tokens: list})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		method, path, body string
		need               labctl.Role
	}{
		{"GET", "/api/v1/jobs", "", labctl.RoleViewer},
		{"GET", "/api/v1/jobs/7", "", labctl.RoleViewer},
		{"GET", "/api/v1/jobs/7/log", "", labctl.RoleViewer},
		{"GET", "/api/v1/devices", "", labctl.RoleViewer},
		{"GET", "/api/v1/consoles", "", labctl.RoleViewer},
		{"POST", "/api/v1/jobs", `{"file":"j.toml","dir":"/tmp","spec":"x"}`, labctl.RoleSubmitter},
		{"POST", "/api/v1/jobs/7/cancel", "{}", labctl.RoleSubmitter},
		{"POST", "/api/v1/jobs/7/resubmit", "{}", labctl.RoleSubmitter},
		{"GET", "/api/v1/jobs/7/artifacts/artifacts/uname.txt", "", labctl.RoleViewer},
		{"POST", "/api/v1/devices/node1/power", `{"op":"cycle"}`, labctl.RoleOperator},
		{"POST", "/api/v1/devices/node1/bootdev", `{"device":"pxe"}`, labctl.RoleOperator},
		{"POST", "/api/v1/devices/node1/maintenance", `{"reason":"x"}`, labctl.RoleOperator},
		{"POST", "/api/v1/devices/node1/online", "{}", labctl.RoleOperator},
		{"POST", "/api/v1/devices/node1/health", "{}", labctl.RoleOperator},
		{"POST", "/api/v1/devices/node1/reserve", `{"for_ns":60000000000}`, labctl.RoleSubmitter},
		{"POST", "/api/v1/devices/node1/release", "{}", labctl.RoleSubmitter},
		{"GET", "/api/v1/audit", "", labctl.RoleOperator},
	} {
		for _, r := range labctl.Roles {
			w := do(s, tt.method, tt.path, tokens[r], "application/json", tt.body)
			if r.Allows(tt.need) {
				if w.Code == http.StatusForbidden {
					t.Errorf("%s %s as %s: 403 %s", tt.method, tt.path, r, w.Body)
				}
				continue
			}
			if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "needs role "+string(tt.need)) {
				t.Errorf("%s %s as %s = %d %s, want 403 naming role %s", tt.method, tt.path, r, w.Code, w.Body, tt.need)
			}
		}
	}
}

func TestAuth(t *testing.T) {
	svc := &fakeService{}
	s := newServer(t, svc, 0)
	for _, tt := range []struct {
		name, header string
		want         int
	}{
		{"none", "", 401},
		{"empty bearer", "Bearer ", 401},
		{"wrong", "Bearer not-the-token", 401},
		{"prefix of the token", "Bearer " + goodToken[:10], 401},
		{"basic", "Basic " + goodToken, 401},
		{"good", "Bearer " + goodToken, 200},
		{"lower-case scheme", "bearer " + goodToken, 200},
	} {
		req := httptest.NewRequest("GET", "/api/v1/devices", nil)
		if tt.header != "" {
			req.Header.Set("Authorization", tt.header)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != tt.want {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, w.Code, tt.want, w.Body)
		}
		if w.Code == 401 && (w.Header().Get("WWW-Authenticate") == "" || !strings.Contains(w.Body.String(), `"error"`)) {
			t.Errorf("%s: 401 without WWW-Authenticate or error body: %v %s", tt.name, w.Header(), w.Body)
		}
	}
	do(s, "GET", "/api/v1/devices", "another-token-1234", "", "")
	if svc.callers[len(svc.callers)-1] != "alice" {
		t.Errorf("callers %v: the second token is alice's", svc.callers)
	}
	// Unauthenticated requests do not reach the service, whatever the path.
	n := len(svc.callers)
	do(s, "POST", "/api/v1/jobs", "", "application/json", `{"spec":"x"}`)
	if len(svc.callers) != n {
		t.Error("an unauthenticated submit reached the service")
	}
}

func TestRequests(t *testing.T) {
	s := newServer(t, &fakeService{}, 64)
	tests := []struct {
		method, path, contentType, body string
		want                            int
		wantBody                        string
	}{
		{"POST", "/api/v1/jobs", "application/json", `{"file":"a.toml","spec":"x"}`, 201, `"submitter":"ci"`},
		{"POST", "/api/v1/jobs", "", `{"file":"a.toml","spec":"x"}`, 201, `"id":7`},
		{"POST", "/api/v1/jobs", "application/json; charset=utf-8", `{"spec":"x"}`, 201, `"id":7`},
		{"POST", "/api/v1/jobs", "text/plain", `{"spec":"x"}`, 400, "Content-Type"},
		{"POST", "/api/v1/jobs", "application/json", `{"spec":`, 400, "request body"},
		{"POST", "/api/v1/jobs", "application/json", `{"spec":"x","evil":1}`, 400, "unknown field"},
		{"POST", "/api/v1/jobs", "application/json", `{"spec":"x"} {"spec":"y"}`, 400, "trailing data"},
		{"POST", "/api/v1/jobs", "application/json", `{"spec":7}`, 400, "request body"},
		{"POST", "/api/v1/jobs", "application/json", `{"spec":"` + strings.Repeat("x", 100) + `"}`, 413, "too large"},
		{"POST", "/api/v1/jobs", "application/json", ``, 400, "empty job"},
		{"GET", "/api/v1/jobs?state=queued,running&limit=5&device=node1", "", "", 200, `"name":"queued+running"`},
		{"GET", "/api/v1/jobs?state=bogus", "", "", 400, "bogus"},
		{"GET", "/api/v1/jobs?limit=-1", "", "", 400, "limit"},
		{"GET", "/api/v1/jobs/7", "", "", 200, `"state":"running"`},
		{"GET", "/api/v1/jobs/8", "", "", 404, "job 8"},
		{"GET", "/api/v1/jobs/abc", "", "", 400, "positive number"},
		{"GET", "/api/v1/jobs/0", "", "", 400, "positive number"},
		{"GET", "/api/v1/jobs/99999999999999999999", "", "", 400, "positive number"},
		{"POST", "/api/v1/jobs/7/cancel", "", "", 200, "canceled"},
		{"POST", "/api/v1/jobs/7/cancel", "application/json", `{"x":1}`, 400, "unknown field"},
		{"GET", "/api/v1/jobs/7/log", "", "", 200, "line two"},
		{"GET", "/api/v1/jobs/7/junit", "", "", 200, "<testsuites"},
		{"GET", "/api/v1/jobs/7/events?offset=-3", "", "", 400, "offset"},
		{"GET", "/api/v1/jobs/7/events?log=maybe", "", "", 400, "log"},
		{"GET", "/api/v1/jobs/8/events", "", "", 404, "job 8"},
		{"GET", "/api/v1/devices/node1", "", "", 200, `"node1"`},
		{"POST", "/api/v1/devices/node1/maintenance", "application/json", `{"reason":"fan"}`, 200, `"reason":"fan"`},
		{"POST", "/api/v1/devices/node1/online", "", "", 200, "idle"},
		{"POST", "/api/v1/devices/node1/health", "", "", 200, `"ok":true`},
		{"POST", "/api/v1/devices/node1/power", "application/json", `{"op":"off"}`, 200, `"on":false`},
		{"POST", "/api/v1/devices/node1/power", "application/json", `{"op":"explode"}`, 400, "explode"},
		{"POST", "/api/v1/devices/node1/power", "application/json", `[1,2]`, 400, "request body"},
		{"POST", "/api/v1/devices/node1/bootdev", "application/json", `{"device":"pxe","force":true}`, 200, `"device":"pxe"`},
		{"POST", "/api/v1/devices/node1/bootdev", "application/json", `{"device":"cdrom"}`, 400, "cdrom"},
		{"DELETE", "/api/v1/jobs/7", "", "", 404, "no such endpoint"},
		{"GET", "/etc/passwd", "", "", 404, "no such endpoint"},
	}
	for _, tt := range tests {
		w := do(s, tt.method, tt.path, goodToken, tt.contentType, tt.body)
		if w.Code != tt.want || !strings.Contains(w.Body.String(), tt.wantBody) {
			t.Errorf("%s %s %q: %d %s; want %d with %q", tt.method, tt.path, tt.body, w.Code, w.Body, tt.want, tt.wantBody)
		}
	}
}

// Errors become statuses in one place; unknown ones are hidden.
func TestErrorStatuses(t *testing.T) {
	for _, tt := range []struct {
		err      error
		want     int
		wantBody string
	}{
		{fmt.Errorf("%w: node1 runs job 3", labctl.ErrBusy), 409, "node1 runs job 3"},
		{fmt.Errorf("%w: bmc 10.0.0.5:623: no answer", labctl.ErrDevice), 502, "no answer"},
		{fmt.Errorf("%w: stopping", labctl.ErrUnavailable), 503, "stopping"},
		{errors.New("database is locked at /var/lib/labctl/secret/path"), 500, "internal error"},
	} {
		s := newServer(t, &fakeService{fail: tt.err}, 0)
		w := do(s, "GET", "/api/v1/devices", goodToken, "", "")
		if w.Code != tt.want || !strings.Contains(w.Body.String(), tt.wantBody) || (tt.want == 500 && strings.Contains(w.Body.String(), "secret")) {
			t.Errorf("%v: %d %s, want %d with %q", tt.err, w.Code, w.Body, tt.want, tt.wantBody)
		}
	}
}

// A panicking handler answers 500 and the server keeps serving.
func TestPanicIsContained(t *testing.T) {
	svc := &fakeService{panics: true}
	s := newServer(t, svc, 0)
	if w := do(s, "GET", "/api/v1/devices", goodToken, "", ""); w.Code != 500 {
		t.Errorf("panicking service: %d %s", w.Code, w.Body)
	}
	svc.panics = false
	if w := do(s, "GET", "/api/v1/devices", goodToken, "", ""); w.Code != 200 {
		t.Errorf("after a panic: %d %s", w.Code, w.Body)
	}
}

// The client over a real HTTP server: replies decode, errors map back to
// the API's errors, event streams arrive in order.
func TestClient(t *testing.T) {
	svc := &fakeService{}
	hs := httptest.NewServer(newServer(t, svc, 0))
	defer hs.Close()
	c, err := api.NewClient(strings.TrimPrefix(hs.URL, "http://"), goodToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	j, err := c.Submit(ctx, labctl.SubmitRequest{File: "smoke.toml", Spec: "x"})
	if err != nil || j.ID != 7 || j.Submitter != "ci" {
		t.Errorf("Submit = %+v, %v", j, err)
	}
	if _, err := c.Job(ctx, 8); !errors.Is(err, labctl.ErrNotFound) || err.Error() != "not found: job 8" {
		t.Errorf("Job(8) = %v, want ErrNotFound", err)
	}
	list, err := c.Jobs(ctx, labctl.JobFilter{States: []string{"queued"}, Limit: 3})
	if err != nil || len(list) != 1 || list[0].Name != "queued" || list[0].Priority != "3" {
		t.Errorf("Jobs = %+v, %v", list, err)
	}
	if rc, err := c.JobLog(ctx, 7); err != nil {
		t.Errorf("JobLog: %v", err)
	} else {
		log, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(log) != "line one\nline two\n" {
			t.Errorf("JobLog = %q, %v", log, err)
		}
	}
	var events []string
	err = c.Follow(ctx, 7, labctl.FollowOptions{Offset: 10}, func(e labctl.Event) error {
		switch {
		case e.Log != "":
			events = append(events, fmt.Sprintf("log@%d", e.Offset))
		case e.Progress != nil:
			events = append(events, fmt.Sprintf("%s %d/%d", e.Progress.Phase, e.Progress.Transfer.Done, e.Progress.Transfer.Total))
		case e.End != nil:
			events = append(events, "end "+e.End.Outcome)
		}
		return nil
	})
	if err != nil || strings.Join(events, ", ") != "log@10, deploy 5/10, end complete" {
		t.Errorf("Follow = %v, %v", events, err)
	}
	if b, err := c.JUnit(ctx, 7); err != nil || !bytes.Contains(b, []byte(`name="smoke"`)) {
		t.Errorf("JUnit = %s, %v", b, err)
	}
	if r, err := c.Power(ctx, "node1", labctl.PowerRequest{Op: "on"}); err != nil || !r.On || r.Node != "node1" {
		t.Errorf("Power = %+v, %v", r, err)
	}

	bad, _ := api.NewClient(hs.URL, "wrong-token-123", nil)
	if _, err := bad.Devices(ctx); !errors.Is(err, labctl.ErrUnauthorized) {
		t.Errorf("Devices with a bad token = %v, want ErrUnauthorized", err)
	}
	if _, err := api.NewClient("", goodToken, nil); err == nil {
		t.Error("NewClient without a server succeeded")
	}
	if _, err := api.NewClient("ftp://x", goodToken, nil); err == nil {
		t.Error("NewClient with ftp:// succeeded")
	}
	svc.fail = fmt.Errorf("%w: node1 runs job 3", labctl.ErrBusy)
	if _, err := c.Power(ctx, "node1", labctl.PowerRequest{Op: "off"}); !errors.Is(err, labctl.ErrBusy) || !strings.Contains(err.Error(), "job 3") {
		t.Errorf("Power on a busy node = %v", err)
	}
}

// The server runs under Serve and stops when its context ends, also with
// an event stream open.
func TestServe(t *testing.T) {
	block := &blockingFollow{fakeService: &fakeService{}, started: make(chan struct{})}
	s, err := api.NewServer(block, api.Config{Addr: "127.0.0.1:0", Tokens: []api.Token{{Name: "ci", Secret: goodToken, Role: labctl.RoleAdmin}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	c, _ := api.NewClient(s.Addr().String(), goodToken, nil)
	followed := make(chan error, 1)
	go func() {
		followed <- c.Follow(context.Background(), 7, labctl.FollowOptions{}, func(labctl.Event) error { return nil })
	}()
	<-block.started
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return with a stream open")
	}
	if err := <-followed; err == nil {
		t.Error("a stream cut by the shutdown ended without an error")
	}
}

type blockingFollow struct {
	*fakeService
	started chan struct{}
}

func (b *blockingFollow) Follow(ctx context.Context, id int64, opts labctl.FollowOptions, send func(labctl.Event) error) error {
	close(b.started)
	<-ctx.Done()
	return ctx.Err()
}

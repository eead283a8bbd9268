package api_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
)

// FuzzClientReplies answers the client's calls with any status and body, as
// a broken or hostile daemon (or whatever listens at the configured URL)
// could: the client never crashes, turns every status that is not a
// success into an *api.Error with that status and a message, and a job's
// event stream ends without error only after the job's End event.
func FuzzClientReplies(f *testing.F) {
	for _, s := range []struct {
		status uint16
		body   string
	}{
		{200, `[{"id":1,"state":"queued"}]`},
		{200, `{"id":1,"state":"finished","outcome":"pass"}`},
		{200, "{\"log\":\"a\\n\",\"offset\":3}\n{\"end\":{\"id\":1}}\n"},
		{200, "{\"progress\":{\"phase\":\"deploy\"}}\n{\"log\":\"x\"}"},
		{200, "{\"log\":\"a\"}\nnot json\n"},
		{200, `{"state":{"x":1}}`},
		{404, `{"error":"job 7 not found"}`},
		{409, `{"error":""}`},
		{503, ""},
		{418, "<html>teapot</html>"},
		{302, ""},
	} {
		for call := range uint8(clientCalls) {
			f.Add(s.status, []byte(s.body), call)
		}
	}
	var reply struct {
		sync.Mutex
		status int
		body   []byte
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply.Lock()
		status, body := reply.status, reply.body
		reply.Unlock()
		w.WriteHeader(status)
		w.Write(body)
	}))
	f.Cleanup(ts.Close)
	c, err := api.NewClient(ts.URL, goodToken, nil)
	if err != nil {
		f.Fatal(err)
	}
	c.Timeout = 5 * time.Second
	f.Fuzz(func(t *testing.T, status uint16, body []byte, call uint8) {
		// Statuses a server can send with a body, redirects aside (the
		// client follows those to a Location that is not there).
		code := 200 + int(status)%400
		if code/100 == 3 || code == 204 {
			code = 200
		}
		reply.Lock()
		reply.status, reply.body = code, body
		reply.Unlock()
		ctx := context.Background()
		var err error
		var ended bool
		switch call % clientCalls {
		case 0:
			_, err = c.Jobs(ctx, labctl.JobFilter{})
		case 1:
			_, err = c.Job(ctx, 1)
		case 2:
			_, err = c.Devices(ctx)
		case 3:
			_, err = c.Power(ctx, "n1", labctl.PowerRequest{Op: "cycle"})
		case 4:
			var log io.ReadCloser
			if log, err = c.JobLog(ctx, 1); err == nil {
				got, _ := io.ReadAll(log)
				log.Close()
				if !bytes.Equal(got, body) {
					t.Fatalf("log %q, sent %q", got, body)
				}
			}
		case 5:
			err = c.Follow(ctx, 1, labctl.FollowOptions{}, func(e labctl.Event) error {
				if ended {
					t.Fatal("an event after the End event")
				}
				ended = e.End != nil
				return nil
			})
			if err == nil && !ended {
				t.Fatalf("events %q: stream ended without the End event and without an error", body)
			}
		}
		var ae *api.Error
		switch {
		case code/100 == 2:
			if errors.As(err, &ae) {
				t.Fatalf("status %d: %v", code, err)
			}
		case !errors.As(err, &ae) || ae.Status != code || ae.Message == "":
			t.Fatalf("status %d %q: error %#v", code, body, err)
		}
	})
}

// clientCalls is how many client calls FuzzClientReplies makes.
const clientCalls = 6

package webhooks_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/webhooks"
)

// instantRun is a RunFunc whose jobs complete at once, with one phase.
func instantRun(_ context.Context, j dispatcher.Job) *results.Job {
	now := time.Now()
	return &results.Job{ID: j.ID, Name: j.Spec.Name, Device: j.Device, Outcome: "complete", Started: now, Finished: now,
		Phases: []results.Phase{{Name: "test", Duration: time.Second}}}
}

// receiver is a webhook receiver that checks signatures and answers
// each request with the next of its statuses (200 when they run out).
type receiver struct {
	t        *testing.T
	secret   []byte
	mu       sync.Mutex
	statuses []int
	tries    int
	got      []webhooks.Event
	bad      []string
	arrived  chan struct{}
}

func newReceiver(t *testing.T, secret string, statuses ...int) (*receiver, *httptest.Server) {
	r := &receiver{t: t, secret: []byte(secret), statuses: statuses, arrived: make(chan struct{}, 100)}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tries++
	if err := webhooks.Verify(r.secret, req.Header, body, time.Now(), 5*time.Minute); err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if len(r.statuses) > 0 {
		s := r.statuses[0]
		r.statuses = r.statuses[1:]
		if s != http.StatusOK {
			w.WriteHeader(s)
			return
		}
	}
	var e webhooks.Event
	if err := json.Unmarshal(body, &e); err != nil || e.Event != req.Header.Get(webhooks.HeaderEvent) || e.Delivery != req.Header.Get(webhooks.HeaderDelivery) {
		r.bad = append(r.bad, "body does not match the headers: "+string(body))
	}
	r.got = append(r.got, e)
	r.arrived <- struct{}{}
}

// wait waits for n events, and returns them.
func (r *receiver) wait(n int) []webhooks.Event {
	r.t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-r.arrived:
		case <-time.After(30 * time.Second):
			r.t.Fatalf("%d of %d webhook events arrived", i, n)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		r.t.Errorf("bad deliveries: %v", r.bad)
	}
	return append([]webhooks.Event(nil), r.got...)
}

// TestDeliveredSignedAndRetried: a job's end and the device changes reach
// the lab's receiver signed with its secret, after a 500 is retried; the
// job's own notify URL gets the end signed with the lab's [notify] secret.
func TestDeliveredSignedAndRetried(t *testing.T) {
	labRecv, labSrv := newReceiver(t, "lab-secret", http.StatusInternalServerError)
	jobRecv, jobSrv := newReceiver(t, "notify-secret")
	n := webhooks.New(webhooks.Config{
		Lab:       "test",
		Hooks:     []webhooks.Hook{{URL: labSrv.URL + "/hook", Secret: []byte("lab-secret"), Events: []string{devices.EventJobEnd}}},
		JobSecret: []byte("notify-secret"),
		JobClient: dispatcher.ImagePolicy{AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}.HTTPClient(),
		Backoff:   10 * time.Millisecond,
	})
	t.Cleanup(n.Close)
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: instantRun, Observers: []daemon.Observer{n},
		Settings: func(c *devices.Config) {
			c.Notify.SecretEnv = "LABCTL_TEST_NOTIFY"
			c.Images.Networks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		}})
	l.WaitIdle()
	j := l.Submit(daemontest.JobText(t, `device = "node1"
notify = ["`+jobSrv.URL+`/ci"]`))
	l.Wait(j.ID)

	for name, r := range map[string]*receiver{"lab": labRecv, "job": jobRecv} {
		got := r.wait(1)
		if len(got) != 1 || got[0].Event != devices.EventJobEnd || got[0].Job == nil || got[0].Job.ID != j.ID ||
			got[0].Job.Outcome != "complete" || got[0].Job.Device != "node1" || got[0].Lab != "test" ||
			len(got[0].Job.Phases) != 1 || got[0].Job.Phases[0].Seconds != 1 {
			t.Errorf("%s receiver got %+v, want job %d's end", name, got, j.ID)
		}
	}
	labRecv.mu.Lock()
	tries := labRecv.tries
	labRecv.mu.Unlock()
	if tries != 2 {
		t.Errorf("lab receiver was tried %d times, want 2 (a 500, then the delivery)", tries)
	}
	// The receiver saw the events; the sender counts them once it reads
	// the answers.
	for deadline := time.Now().Add(10 * time.Second); n.Stats().Delivered < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if s := n.Stats(); s.Delivered != 2 || s.Retried != 1 || s.Failed != 0 || s.Dropped != 0 {
		t.Errorf("stats = %+v, want 2 delivered after 1 retry", s)
	}
}

// TestDeviceStateEvents: a device's change of state reaches a receiver
// that asked for device.state.
func TestDeviceStateEvents(t *testing.T) {
	r, srv := newReceiver(t, "s3cret")
	n := webhooks.New(webhooks.Config{Lab: "test", Hooks: []webhooks.Hook{{URL: srv.URL, Secret: []byte("s3cret"), Events: []string{devices.EventDeviceState}}}})
	t.Cleanup(n.Close)
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: instantRun, Observers: []daemon.Observer{n}})
	l.WaitIdle()
	if _, err := l.Daemon.Maintenance(daemontest.Context(t), "node1", "new disk"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, e := range r.wait(1) {
			if e.Device != nil && e.Device.Name == "node1" && e.Device.To == labctl.DeviceMaintenance && e.Device.From == labctl.DeviceIdle {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no device.state event for node1 going into maintenance")
		}
	}
}

// TestDeadReceiverDoesNotBlockJobs: a receiver that never answers holds
// up no job, and once its queue is full, events for it are dropped and
// counted.
func TestDeadReceiverDoesNotBlockJobs(t *testing.T) {
	release := make(chan struct{})
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	t.Cleanup(func() { close(release); dead.Close() })
	n := webhooks.New(webhooks.Config{Lab: "test", Hooks: []webhooks.Hook{{URL: dead.URL, Secret: []byte("x")}},
		QueueSize: 2, Timeout: time.Minute})
	t.Cleanup(n.Close)
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: instantRun, Observers: []daemon.Observer{n}})
	l.WaitIdle()
	start := time.Now()
	for range 6 {
		j := l.Submit(daemontest.JobText(t, `device = "node1"`))
		if end := l.Wait(j.ID); end.Outcome != "complete" {
			t.Fatalf("job %d ended %s: %s", j.ID, end.Outcome, end.Reason)
		}
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("6 jobs took %s with a dead receiver", took)
	}
	if s := n.Stats(); s.Dropped == 0 || s.Delivered != 0 {
		t.Errorf("stats = %+v, want drops and nothing delivered", s)
	}
}

// TestNotifyToForbiddenAddressRefused: a job whose notify URL points at
// an address jobs may not reach is refused at submit, saying why.
func TestNotifyToForbiddenAddressRefused(t *testing.T) {
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: instantRun,
		Settings: func(c *devices.Config) { c.Notify.SecretEnv = "LABCTL_TEST_NOTIFY" }})
	_, err := l.Daemon.Submit(daemontest.Context(t), labctl.SubmitRequest{File: "job.toml", Dir: "/",
		Spec: daemontest.JobText(t, `device = "node1"
notify = ["http://127.0.0.1:9/hook"]`)})
	if err == nil {
		t.Fatal("submit with a loopback notify URL was accepted")
	}
	for _, want := range []string{"notify URL http://127.0.0.1:9/hook refused", "loopback", "allow_networks"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestNotifyNeedsALabSecret: a lab that signs no job notifications
// refuses notify URLs.
func TestNotifyNeedsALabSecret(t *testing.T) {
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: instantRun})
	_, err := l.Daemon.Submit(daemontest.Context(t), labctl.SubmitRequest{File: "job.toml", Dir: "/",
		Spec: daemontest.JobText(t, `device = "node1"
notify = ["https://ci.example.org/hook"]`)})
	if err == nil || !strings.Contains(err.Error(), "[notify]") {
		t.Errorf("submit = %v, want a refusal naming [notify]", err)
	}
}

// TestVerifyRefusesReplay: an old timestamp or another body fails.
func TestVerifyRefusesReplay(t *testing.T) {
	body := []byte(`{"event":"job.end"}`)
	old := time.Now().Add(-time.Hour).Unix()
	h := http.Header{}
	h.Set(webhooks.HeaderTimestamp, strconvI(old))
	h.Set(webhooks.HeaderSignature, webhooks.Sign([]byte("k"), old, body))
	if err := webhooks.Verify([]byte("k"), h, body, time.Now(), 5*time.Minute); err == nil {
		t.Error("an hour-old delivery verified")
	}
	now := time.Now().Unix()
	h.Set(webhooks.HeaderTimestamp, strconvI(now))
	h.Set(webhooks.HeaderSignature, webhooks.Sign([]byte("k"), now, body))
	if err := webhooks.Verify([]byte("k"), h, body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("a fresh delivery: %v", err)
	}
	if err := webhooks.Verify([]byte("k"), h, []byte(`{"event":"other"}`), time.Now(), 5*time.Minute); err == nil {
		t.Error("another body verified")
	}
}

func strconvI(v int64) string { return strconv.FormatInt(v, 10) }

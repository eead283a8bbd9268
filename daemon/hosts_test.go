package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/internal/testutil"
	"github.com/labctl/labctl/results"
	"github.com/labctl/labctl/store"
	"github.com/labctl/labctl/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const hostToken = "daemontest-host-token"

// Short leases: a lost host is noticed within a few seconds.
const (
	testLease = 2 * time.Second
	testPoll  = 100 * time.Millisecond
)

// hostStore is the store of one host: both interfaces.
type hostStore interface {
	store.Store
	store.Hosts
}

// cutStore is a host's store that can be cut off (every call fails), as
// when the host loses the network to the database or is killed.
type cutStore struct {
	hostStore
	cut atomic.Bool
	// deaf drops the queue's changes WatchQueue hears: the host then
	// learns of them only from its poll.
	deaf atomic.Bool
	// loseClaim: the next loseClaim claims commit but their answer is
	// lost (a timeout).
	loseClaim atomic.Int32
	// queueReads counts the reads of the whole queue (its IDs).
	queueReads atomic.Int32
}

var errCut = errors.New("connection refused (test: cut off)")

func (s *cutStore) err() error {
	if s.cut.Load() {
		return errCut
	}
	return nil
}
func (s *cutStore) CreateJob(ctx context.Context, j store.Job) (store.Job, error) {
	if err := s.err(); err != nil {
		return store.Job{}, err
	}
	return s.hostStore.CreateJob(ctx, j)
}
func (s *cutStore) Job(ctx context.Context, id int64) (store.Job, error) {
	if err := s.err(); err != nil {
		return store.Job{}, err
	}
	return s.hostStore.Job(ctx, id)
}
func (s *cutStore) Jobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	if err := s.err(); err != nil {
		return nil, err
	}
	return s.hostStore.Jobs(ctx, f)
}
func (s *cutStore) JobIDs(ctx context.Context, f store.JobFilter) ([]int64, error) {
	if err := s.err(); err != nil {
		return nil, err
	}
	if slices.Equal(f.States, []string{store.Queued}) && f.IDs == nil {
		s.queueReads.Add(1)
	}
	return s.hostStore.JobIDs(ctx, f)
}
func (s *cutStore) ClaimFirst(ctx context.Context, ids []int64, device string, at time.Time) (int64, error) {
	if err := s.err(); err != nil {
		return 0, err
	}
	id, err := s.hostStore.ClaimFirst(ctx, ids, device, at)
	if err == nil && s.loseClaim.Add(-1) >= 0 {
		return 0, context.DeadlineExceeded
	}
	return id, err
}
func (s *cutStore) FinishJob(ctx context.Context, id int64, from string, f store.Finish) error {
	if err := s.err(); err != nil {
		return err
	}
	return s.hostStore.FinishJob(ctx, id, from, f)
}
func (s *cutStore) SetDevices(ctx context.Context, devs []store.Device) error {
	if err := s.err(); err != nil {
		return err
	}
	return s.hostStore.SetDevices(ctx, devs)
}
func (s *cutStore) RenewLease(ctx context.Context, now, until time.Time) error {
	if err := s.err(); err != nil {
		return err
	}
	return s.hostStore.RenewLease(ctx, now, until)
}
func (s *cutStore) EndLostJobs(ctx context.Context, now time.Time) ([]store.Job, error) {
	if err := s.err(); err != nil {
		return nil, err
	}
	return s.hostStore.EndLostJobs(ctx, now)
}

// WatchQueue hears the queue's changes while the store is not cut off.
func (s *cutStore) WatchQueue(ctx context.Context, changed func(store.QueueNews)) {
	s.hostStore.(*store.Postgres).WatchQueue(ctx, func(news store.QueueNews) {
		if !s.cut.Load() && !s.deaf.Load() {
			changed(news)
		}
	})
}
func (s *cutStore) Clock(ctx context.Context) (time.Time, error) {
	if err := s.err(); err != nil {
		return time.Time{}, err
	}
	return s.hostStore.(*store.Postgres).Clock(ctx)
}
func (s *cutStore) Hosts(ctx context.Context) ([]store.Host, error) {
	if err := s.err(); err != nil {
		return nil, err
	}
	return s.hostStore.Hosts(ctx)
}
func (s *cutStore) LabDevices(ctx context.Context) ([]store.LabDevice, error) {
	if err := s.err(); err != nil {
		return nil, err
	}
	return s.hostStore.LabDevices(ctx)
}

// labHost is one host of a test lab: a daemon on PostgreSQL with fake
// nodes, and its API.
type labHost struct {
	name   string
	d      *daemon.Daemon
	store  *cutStore
	fakes  map[string]*daemontest.FakeNode
	url    string
	log    *testutil.SyncBuffer
	client *api.Client
	stop   func()
}

// startHost starts host name of the lab on the database at dbURL, with
// fake nodes (of type sim, tagged x86) named nodes, running jobs with run.
func startHost(t *testing.T, dbURL, name string, fakes map[string]*daemontest.FakeNode, nodes []string, run daemon.RunFunc) (*labHost, error) {
	t.Helper()
	return startHostPolling(t, dbURL, name, fakes, nodes, run, testPoll)
}

// startHostPolling is startHost with the host looking at the store every
// poll (its lease is then at least twice that).
func startHostPolling(t *testing.T, dbURL, name string, fakes map[string]*daemontest.FakeNode, nodes []string, run daemon.RunFunc, poll time.Duration) (*labHost, error) {
	t.Helper()
	st, err := store.OpenPostgres(context.Background(), dbURL, "")
	if err != nil {
		return nil, err
	}
	cfg := &devices.Lab{Config: devices.Config{Name: "test", StateDir: t.TempDir()}}
	labNodes := testNodes{}
	h := &labHost{name: name, store: &cutStore{hostStore: st}, fakes: map[string]*daemontest.FakeNode{}, log: &testutil.SyncBuffer{}}
	for _, n := range nodes {
		f := fakes[n]
		if f == nil {
			f = &daemontest.FakeNode{Name: n}
			fakes[n] = f
		}
		h.fakes[n] = f
		dev := &devices.Device{Name: n, DeviceType: "sim", Tags: []string{"x86"}, Settings: devices.DefaultSettings()}
		dev.Settings.Timeouts.Power = 5 * time.Second
		cfg.Devices = append(cfg.Devices, dev)
		labNodes[n] = &labctl.Node{Power: f, Console: f, Netboot: f}
	}
	log := slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("host %s log:\n%s", name, h.log.String())
		}
	})
	peer := func(_, apiURL string) (daemon.Peer, error) {
		c, err := api.NewClient(apiURL, hostToken, nil)
		if err != nil {
			return nil, err
		}
		c.OnBehalf = true
		return c, nil
	}
	d, err := daemon.New(context.Background(), daemon.Config{Lab: cfg, Nodes: labNodes, Store: h.store, Run: run, Log: log,
		Host: &daemon.HostConfig{Name: name, Lease: max(testLease, 2*poll), Poll: poll, Peer: peer}})
	if err != nil {
		st.Close()
		return nil, err
	}
	srv, err := api.NewServer(d, api.Config{Addr: "127.0.0.1:0", Log: log, Tokens: []api.Token{
		{Name: "ci", Secret: daemontest.Token, Role: labctl.RoleAdmin},
		{Name: "viewer", Secret: "daemontest-viewer", Role: labctl.RoleViewer},
		{Name: "lab-hosts", Secret: hostToken, Role: labctl.RoleAdmin, Host: true},
	}})
	if err != nil {
		st.Close()
		return nil, err
	}
	h.url = "http://" + srv.Addr().String()
	d.SetHostAPI(h.url)
	h.d = d
	h.client, _ = api.NewClient(h.url, daemontest.Token, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.Serve(ctx) }()
	go func() { defer wg.Done(); srv.Serve(ctx) }()
	// Registered with its API once Serve runs.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		hs, err := st.Hosts(context.Background())
		if err == nil && slices.ContainsFunc(hs, func(x store.Host) bool { return x.Name == name && x.API == h.url }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host %s did not register its API within a minute: %+v, %v", name, hs, err)
		}
	}
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			st.Close()
		})
	}
	t.Cleanup(h.stop)
	return h, nil
}

type testNodes map[string]*labctl.Node

func (n testNodes) Node(name string) (*labctl.Node, error) {
	if x := n[name]; x != nil {
		return x, nil
	}
	return nil, fmt.Errorf("no device %q", name)
}

// hostRunner runs jobs for every host of a test lab: it counts each job's
// runs, writes a job log, holds the first hold jobs until that many run
// at once, and holds jobs whose name starts with "hold" until their
// context ends.
type hostRunner struct {
	mu      sync.Mutex
	runs    map[string][]string // job ID → "host/device" of each run
	hold    int
	held    int
	barrier chan struct{}
	causes  map[string]error // held jobs: why their context ended
	news    chan struct{}    // closed and replaced when a job starts
}

func newHostRunner(hold int) *hostRunner {
	return &hostRunner{runs: map[string][]string{}, hold: hold, barrier: make(chan struct{}), causes: map[string]error{}, news: make(chan struct{})}
}

func (r *hostRunner) forHost(host string) daemon.RunFunc {
	return func(ctx context.Context, j dispatcher.Job) *results.Job {
		start := time.Now()
		r.mu.Lock()
		r.runs[j.ID] = append(r.runs[j.ID], host+"/"+j.Device)
		close(r.news)
		r.news = make(chan struct{})
		wait := r.held < r.hold
		if wait {
			r.held++
			if r.held == r.hold {
				close(r.barrier)
			}
		}
		r.mu.Unlock()
		os.MkdirAll(j.Dir, 0o750)
		os.WriteFile(filepath.Join(j.Dir, "job.log"), []byte(fmt.Sprintf("job %s ran on %s of host %s\n", j.ID, j.Device, host)), 0o640)
		res := &results.Job{ID: j.ID, Name: j.Spec.Name, Device: j.Device, Started: start, Outcome: "complete"}
		switch {
		case strings.HasPrefix(j.Spec.Name, "hold"):
			<-ctx.Done()
			r.mu.Lock()
			r.causes[j.ID] = context.Cause(ctx)
			r.mu.Unlock()
			end := dispatcher.Stopped(context.Cause(ctx))
			res.Outcome, res.Reason = string(end.Outcome), end.Reason
		case wait:
			select {
			case <-r.barrier:
			case <-ctx.Done():
				res.Outcome = "canceled"
			}
		}
		res.Finished = time.Now()
		return res
	}
}

func (r *hostRunner) runsOf(id int64) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.runs[fmt.Sprint(id)])
}

func (r *hostRunner) waitStarted(t *testing.T, id int64) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		r.mu.Lock()
		ran := len(r.runs[fmt.Sprint(id)]) > 0
		news := r.news
		r.mu.Unlock()
		if ran {
			return
		}
		select {
		case <-news:
		case <-timeout:
			t.Fatalf("job %d did not start within a minute", id)
		}
	}
}

func submitVia(t *testing.T, c *api.Client, top string) labctl.Job {
	t.Helper()
	j, err := c.Submit(daemontest.Context(t), labctl.SubmitRequest{File: "job.toml", Dir: "/", Spec: daemontest.JobText(t, top)})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return j
}

// follow follows a job to its end through c and returns the end and the
// log it sent.
func follow(t *testing.T, c *api.Client, id int64) (labctl.Job, string) {
	t.Helper()
	var end *labctl.Job
	var log strings.Builder
	err := c.Follow(daemontest.Context(t), id, labctl.FollowOptions{}, func(e labctl.Event) error {
		log.WriteString(e.Log)
		if e.End != nil {
			end = e.End
		}
		return nil
	})
	if err != nil || end == nil {
		t.Fatalf("follow job %d: %v", id, err)
	}
	return *end, log.String()
}

// waitStored waits until the store holds job id in a state cond accepts.
func waitStored(t *testing.T, s store.Store, id int64, what string, cond func(store.Job) bool) store.Job {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		rec, err := s.Job(context.Background(), id)
		if err == nil && cond(rec) {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d: not %s within a minute: %+v, %v", id, what, rec, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Three hosts on one database are one lab: jobs submitted through one
// host run on all three, each once; any host shows every device with its
// host, and answers for the others' jobs and devices (logs, follow,
// power) by forwarding to their hosts.
func TestHostsOneLab(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	r := newHostRunner(6)
	fakes := map[string]*daemontest.FakeNode{}
	var hosts []*labHost
	for i := 1; i <= 3; i++ {
		name := fmt.Sprint("rack", i)
		h, err := startHost(t, dbURL, name, fakes, []string{name + "-a", name + "-b"}, r.forHost(name))
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	via := hosts[0].client
	var ids []int64
	for i := range 30 {
		ids = append(ids, submitVia(t, via, fmt.Sprintf("name = \"j%d\"\ndevice_type = \"sim\"\n", i)).ID)
	}
	perHost := map[string]int{}
	for _, id := range ids {
		end, log := follow(t, via, id)
		if end.Outcome != "complete" {
			t.Errorf("job %d ended %s: %s", id, end.Outcome, end.Reason)
		}
		runs := r.runsOf(id)
		if len(runs) != 1 {
			t.Errorf("job %d ran %d times: %v", id, len(runs), runs)
			continue
		}
		host, dev, _ := strings.Cut(runs[0], "/")
		perHost[host]++
		if end.Host != host || end.Device != dev {
			t.Errorf("job %d: the API says it ran on %s of %s, it ran on %s", id, end.Device, end.Host, runs[0])
		}
		if want := fmt.Sprintf("job %d ran on %s of host %s\n", id, dev, host); log != want {
			t.Errorf("job %d: log through rack1 = %q, want %q", id, log, want)
		}
	}
	for _, h := range hosts {
		if perHost[h.name] < 2 {
			t.Errorf("host %s ran %d jobs, want at least 2 (one queue for the lab): %v", h.name, perHost[h.name], perHost)
		}
	}
	// Any host lists every device, with its host.
	devs, err := hosts[1].client.Devices(daemontest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range devs {
		got = append(got, d.Name+"@"+d.Host)
	}
	if want := "rack1-a@rack1 rack1-b@rack1 rack2-a@rack2 rack2-b@rack2 rack3-a@rack3 rack3-b@rack3"; strings.Join(got, " ") != want {
		t.Errorf("devices through rack2 = %s, want %s", strings.Join(got, " "), want)
	}
	// The log of a job of rack3, read through rack2.
	var last int64
	for _, id := range ids {
		if strings.HasPrefix(r.runsOf(id)[0], "rack3/") {
			last = id
		}
	}
	rc, err := hosts[1].client.JobLog(daemontest.Context(t), last)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if !strings.Contains(string(b), "of host rack3") {
		t.Errorf("log of job %d through rack2 = %q", last, b)
	}
	// Power through a host that does not own the node: done by its host,
	// as the person who asked.
	before := len(fakes["rack3-a"].Calls())
	resp, err := hosts[0].client.Power(daemontest.Context(t), "rack3-a", labctl.PowerRequest{Op: "on"})
	if err != nil || !resp.On {
		t.Fatalf("power on rack3-a through rack1 = %+v, %v", resp, err)
	}
	if calls := fakes["rack3-a"].Calls()[before:]; !slices.Contains(calls, "power on") {
		t.Errorf("rack3-a's calls after power on through rack1: %v", calls)
	}
	audit, err := hosts[2].d.Audit(daemontest.Context(t), labctl.AuditFilter{Device: "rack3-a"})
	if err != nil || len(audit) == 0 || audit[len(audit)-1].Who != "ci" {
		t.Errorf("rack3's audit of the forwarded power on = %+v, %v; want it by ci", audit, err)
	}
	// A viewer forwarded stays a viewer.
	viewer, _ := api.NewClient(hosts[0].url, "daemontest-viewer", nil)
	if _, err := viewer.Power(daemontest.Context(t), "rack3-a", labctl.PowerRequest{Op: "off"}); !errors.Is(err, labctl.ErrForbidden) {
		t.Errorf("power off by a viewer through rack1 = %v, want forbidden", err)
	}
}

// A worker whose job another host took meanwhile takes the next queued
// job at once: not when the store next says the queue changed, nor at the
// host's next poll (an hour here, and the host hears no changes). Its
// claim names the next jobs too and takes the first one free; when every
// job it named is gone, one read of the store's queue finds the next.
func TestHostsTakenJobNextAtOnce(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	r := newHostRunner(0)
	a, err := startHostPolling(t, dbURL, "rack1", map[string]*daemontest.FakeNode{}, []string{"rack1-a"}, r.forHost("rack1"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a.store.deaf.Store(true)
	// Another process of the lab takes queued jobs in the store.
	other, err := store.OpenPostgres(context.Background(), dbURL, "")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// taken jobs are claimed elsewhere while the only device is busy;
	// then the device comes free and must start next, and none of them.
	run := func(taken int) (first int64) {
		busy := submitVia(t, a.client, "name = \"hold\"\ndevice_type = \"sim\"\n")
		r.waitStarted(t, busy.ID)
		var ids []int64
		for range taken {
			ids = append(ids, submitVia(t, a.client, "name = \"taken\"\ndevice_type = \"sim\"\n").ID)
		}
		next := submitVia(t, a.client, "name = \"next\"\ndevice_type = \"sim\"\n")
		for _, id := range ids {
			if err := other.ClaimJob(context.Background(), id, "elsewhere", time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.client.Cancel(daemontest.Context(t), busy.ID); err != nil {
			t.Fatal(err)
		}
		r.waitStarted(t, next.ID)
		for _, id := range ids {
			if runs := r.runsOf(id); len(runs) != 0 {
				t.Errorf("job %d, taken elsewhere, ran here too: %v", id, runs)
			}
		}
		return ids[0]
	}
	// One job gone: the claim of the first queued job takes the next (the
	// gone one, back in the queue, may be tried again once next is done).
	first := run(1)
	log := a.log.String()
	failed := strings.Index(log, fmt.Sprintf("job not taken off the queue: it changed\" job=%d", first))
	started := strings.Index(log, fmt.Sprintf("job started\" job=%d", first+1))
	if started < 0 || (failed >= 0 && failed < started) {
		t.Errorf("the claim of job %d, taken elsewhere, did not take the next job it named:\n%s", first, log)
	}
	// More jobs gone than a claim names: failed claims, then the next;
	// the failed claim's answer names every job it tried as gone, so they
	// are not tried again one by one.
	before := len(a.log.String())
	first = run(30)
	tried := regexp.MustCompile(fmt.Sprintf(`job not taken off the queue: it changed" job=\d+ [^\n]*claim jobs [^:\n]*\b%d\b`, first))
	if !tried.MatchString(a.log.String()) {
		t.Errorf("rack1 did not try the jobs taken elsewhere (the test proves nothing):\n%s", a.log.String())
	}
	// 30 gone (first, first+1, ...; next is first+30), 9 named per
	// claim: at most 4 refused claims before next started.
	tail := a.log.String()[before:]
	if i := strings.Index(tail, fmt.Sprintf("job started\" job=%d ", first+30)); i >= 0 {
		tail = tail[:i]
	}
	refused := 0
	for id := first; id < first+30; id++ {
		refused += strings.Count(tail, fmt.Sprintf("job not taken off the queue: it changed\" job=%d ", id))
	}
	if refused > 4 {
		t.Errorf("%d claims failed before the next job started, want at most 4 (the jobs a refused claim found gone were tried again):\n%s", refused, tail)
	}
}

// A claim that named several jobs, took one of them and lost its answer
// leaves none running in the store unseen: the job it took, which never
// started, runs once or ends incomplete, and the host takes work again.
func TestHostsLostClaimAnswer(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	r := newHostRunner(0)
	a, err := startHostPolling(t, dbURL, "rack1", map[string]*daemontest.FakeNode{}, []string{"rack1-a"}, r.forHost("rack1"), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	other, err := store.OpenPostgres(context.Background(), dbURL, "")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	busy := submitVia(t, a.client, "name = \"hold\"\ndevice_type = \"sim\"\n")
	r.waitStarted(t, busy.ID)
	taken := submitVia(t, a.client, "name = \"taken\"\ndevice_type = \"sim\"\n")
	lost := submitVia(t, a.client, "name = \"lost\"\ndevice_type = \"sim\"\n")
	if err := other.ClaimJob(context.Background(), taken.ID, "elsewhere", time.Now()); err != nil {
		t.Fatal(err)
	}
	// The claim of [taken, lost] takes lost; its answer does not come.
	a.store.loseClaim.Store(1)
	if _, err := a.client.Cancel(daemontest.Context(t), busy.ID); err != nil {
		t.Fatal(err)
	}
	// Either the host finds the job under its claim when a claim of its
	// own names it first, on the same device, and runs it; or it reads
	// the store's queue first and ends it.
	rec := waitStored(t, a.store, lost.ID, "the job whose claim's answer was lost to end", func(j store.Job) bool { return j.State == store.Finished })
	runs := r.runsOf(lost.ID)
	switch {
	case rec.Outcome == "complete" && len(runs) == 1:
	case rec.Outcome == "incomplete" && strings.Contains(rec.Reason, "lost the answer") && len(runs) == 0:
	default:
		t.Errorf("job %d: %s %q, ran %v; want it run once, or ended incomplete (the answer lost) and not run", lost.ID, rec.Outcome, rec.Reason, runs)
	}
	if runs := r.runsOf(taken.ID); len(runs) != 0 {
		t.Errorf("job %d, taken elsewhere, ran here: %v", taken.ID, runs)
	}
	next := submitVia(t, a.client, "name = \"next\"\ndevice_type = \"sim\"\n")
	r.waitStarted(t, next.ID)
}

// A job for a device of a host that joined after this host last read the
// lab is taken at once, not refused: the host reads the lab again before
// it refuses a job no device it knows fits. A device no host has is
// still refused.
func TestHostsSubmitForHostJoinedSince(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	r := newHostRunner(0)
	fakes := map[string]*daemontest.FakeNode{}
	// rack1 reads the lab when it starts, and then not for an hour.
	a, err := startHostPolling(t, dbURL, "rack1", fakes, []string{"rack1-a"}, r.forHost("rack1"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := startHost(t, dbURL, "rack2", fakes, []string{"rack2-a"}, r.forHost("rack2"))
	if err != nil {
		t.Fatal(err)
	}
	j := submitVia(t, a.client, "name = \"far\"\ndevice = \"rack2-a\"\n")
	if end, _ := follow(t, b.client, j.ID); end.Outcome != "complete" || end.Host != "rack2" {
		t.Errorf("job for rack2-a submitted through rack1: %s on host %q (%s)", end.Outcome, end.Host, end.Reason)
	}
	if runs := r.runsOf(j.ID); !slices.Equal(runs, []string{"rack2/rack2-a"}) {
		t.Errorf("job ran %v, want once on rack2/rack2-a", runs)
	}
	_, err = a.client.Submit(daemontest.Context(t), labctl.SubmitRequest{File: "job.toml", Dir: "/",
		Spec: daemontest.JobText(t, "name = \"nowhere\"\ndevice = \"rack9-a\"\n")})
	if !errors.Is(err, labctl.ErrInvalid) || !strings.Contains(err.Error(), `no device "rack9-a"`) {
		t.Errorf("submit for a device no host has = %v, want invalid naming it", err)
	}
}

// A host hears of the jobs submitted through another host by their IDs
// (the NOTIFY names them) and reads those rows only: the jobs start at
// once although it looks at the whole queue only when it starts (its
// poll is an hour), and their submits make it read the whole queue no
// more.
func TestHostsHearsSubmits(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	r := newHostRunner(0)
	fakes := map[string]*daemontest.FakeNode{}
	a, err := startHost(t, dbURL, "rack1", fakes, []string{"rack1-a"}, r.forHost("rack1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := startHostPolling(t, dbURL, "rack2", fakes, []string{"rack2-a", "rack2-b"}, r.forHost("rack2"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		j := submitVia(t, a.client, fmt.Sprintf("name = \"far%d\"\ndevice = \"rack2-%c\"\n", i, 'a'+i%2))
		if end, _ := follow(t, a.client, j.ID); end.Outcome != "complete" || end.Host != "rack2" {
			t.Errorf("job %d for rack2 submitted through rack1: %s on host %q (%s)", j.ID, end.Outcome, end.Host, end.Reason)
		}
	}
	// One read when it started, one when it began to listen (for what
	// it may have missed before).
	if n := b.store.queueReads.Load(); n > 2 {
		t.Errorf("rack2 read the whole queue %d times, want at most 2 (its start): the submits made it read it", n)
	}
}

// A host cut off from the database for longer than its lease is lost:
// another host ends its running job incomplete ("host rack1 lost"), once,
// and queues its retry; the lab shows its devices down. When the host
// reaches the database again it stops that job (it lost the claim),
// powers the node off and sets its boot entry back, and takes work again.
// A new daemon of a host that was lost cleans up its nodes the same way
// before it takes work.
func TestHostsLostHost(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	r := newHostRunner(0)
	fakes := map[string]*daemontest.FakeNode{}
	rack1, err := startHost(t, dbURL, "rack1", fakes, []string{"a1"}, r.forHost("rack1"))
	if err != nil {
		t.Fatal(err)
	}
	rack2, err := startHost(t, dbURL, "rack2", fakes, []string{"b1"}, r.forHost("rack2"))
	if err != nil {
		t.Fatal(err)
	}
	job := submitVia(t, rack2.client, "name = \"hold1\"\ndevice = \"a1\"\nretries = 1\n")
	r.waitStarted(t, job.ID)
	for _, h := range []*labHost{rack1, rack2} {
		if v, err := h.client.Job(daemontest.Context(t), job.ID); err != nil || v.State != store.Running || v.Host != "rack1" {
			t.Errorf("the running job through %s = %s on host %q, %v; want running on rack1", h.name, v.State, v.Host, err)
		}
	}
	cut := time.Now()
	rack1.store.cut.Store(true)
	rec := waitStored(t, rack2.store, job.ID, "ended by rack2", func(j store.Job) bool { return j.State == store.Finished })
	t.Logf("cut off at %s, lease %s: job ended after %s", cut.Format(time.TimeOnly), testLease, time.Since(cut).Round(time.Millisecond))
	if rec.Outcome != "incomplete" || rec.Reason != "host rack1 lost: its lease ran out while the job ran" || rec.Host != "rack1" {
		t.Errorf("job of the lost host: %s %q host %s", rec.Outcome, rec.Reason, rec.Host)
	}
	// CI waiting through rack2 gets its JUnit report though rack1 is down.
	if xml, err := rack2.client.JUnit(daemontest.Context(t), job.ID); err != nil || !strings.Contains(string(xml), "host rack1 lost") || !strings.Contains(string(xml), "<testsuite") {
		t.Errorf("JUnit of the lost host's job through rack2 = %s, %v; want a report naming the lost host", xml, err)
	}
	// Ended only once the lease of its host's last renewal had run out.
	hs, err := rack2.store.Hosts(context.Background())
	if err != nil || len(hs) != 2 || hs[0].Name != "rack1" {
		t.Fatalf("hosts: %+v, %v", hs, err)
	}
	if !rec.Finished.After(hs[0].LeaseUntil) {
		t.Errorf("the job ended at %s, before its host's lease ran out at %s", rec.Finished.Format(time.StampMicro), hs[0].LeaseUntil.Format(time.StampMicro))
	}
	devs, err := rack2.client.Devices(daemontest.Context(t))
	if err != nil || len(devs) != 2 || devs[0].Name != "a1" || devs[0].State != labctl.DeviceDown {
		t.Errorf("devices through rack2 while rack1 is lost = %+v, %v; want a1 down", devs, err)
	}
	if d, err := rack2.client.Device(daemontest.Context(t), "a1"); err != nil || d.State != labctl.DeviceDown || d.Host != "rack1" {
		t.Errorf("device a1 through rack2 while rack1 is lost = %+v, %v; want down, of rack1", d, err)
	}
	var attempts []store.Job
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		attempts, err = rack2.store.Attempts(context.Background(), job.ID)
		if err == nil && len(attempts) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("attempts of the lost job = %d, %v; want its retry", len(attempts), err)
		}
	}
	retry := attempts[1].ID
	calls := len(fakes["a1"].Calls())
	// rack1 reaches the database again: it stops the job, cleans the node
	// up, and runs the retry.
	rack1.store.cut.Store(false)
	r.waitStarted(t, retry)
	r.mu.Lock()
	cause := r.causes[fmt.Sprint(job.ID)]
	r.mu.Unlock()
	if cause == nil || !strings.Contains(cause.Error(), "lost the job's claim") {
		t.Errorf("the lost job's context ended with %v, want the lost claim", cause)
	}
	after := fakes["a1"].Calls()[calls:]
	if i, k := slices.Index(after, "power off"), slices.Index(after, "pxe local"); i < 0 || k < 0 {
		t.Errorf("a1's calls after rack1 came back: %v; want power off and pxe local before the retry", after)
	}
	if got := r.runsOf(job.ID); len(got) != 1 {
		t.Errorf("the lost job ran %v", got)
	}
	if _, err := rack2.client.Cancel(daemontest.Context(t), retry); err != nil {
		t.Fatalf("cancel the retry through rack2: %v", err)
	}
	// A host that is lost for good (killed): rack2's job ends, and a new
	// daemon of rack2 cleans its node up before it takes work.
	held := submitVia(t, rack1.client, "name = \"hold2\"\ndevice = \"b1\"\nretries = 0\n")
	r.waitStarted(t, held.ID)
	rack2.store.cut.Store(true)
	rec = waitStored(t, rack1.store, held.ID, "ended by rack1", func(j store.Job) bool { return j.State == store.Finished })
	if rec.Reason != "host rack2 lost: its lease ran out while the job ran" {
		t.Errorf("job of the killed host: %s %q", rec.Outcome, rec.Reason)
	}
	calls = len(fakes["b1"].Calls())
	rack2b, err := startHost(t, dbURL, "rack2", fakes, []string{"b1"}, r.forHost("rack2b"))
	if err != nil {
		t.Fatal(err)
	}
	next := submitVia(t, rack2b.client, "name = \"after\"\ndevice = \"b1\"\n")
	if end, _ := follow(t, rack1.client, next.ID); end.Outcome != "complete" || end.Host != "rack2" {
		t.Errorf("job after rack2's restart: %s on %s", end.Outcome, end.Host)
	}
	after = fakes["b1"].Calls()[calls:]
	if i, k := slices.Index(after, "power off"), slices.Index(after, "pxe local"); i < 0 || k < 0 {
		t.Errorf("b1's calls after rack2 restarted: %v; want power off and pxe local", after)
	}
	if got := r.runsOf(next.ID); len(got) != 1 || got[0] != "rack2b/b1" {
		t.Errorf("the job after the restart ran %v", got)
	}
	if got := r.runsOf(held.ID); len(got) != 1 {
		t.Errorf("the killed host's job ran %v", got)
	}
}

// Two hosts claiming one device: the second does not start, its error
// names both hosts, and it wrote nothing.
func TestHostsDeviceClaimedTwice(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	fakes := map[string]*daemontest.FakeNode{}
	r := newHostRunner(0)
	rack1, err := startHost(t, dbURL, "rack1", fakes, []string{"n1", "n2"}, r.forHost("rack1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = startHost(t, dbURL, "rack2", fakes, []string{"n2", "n3"}, r.forHost("rack2"))
	if !errors.Is(err, store.ErrDeviceTaken) || !strings.Contains(err.Error(), "device n2 is host rack1's, and host rack2 claims it too") {
		t.Fatalf("second host with n2 = %v, want refused naming rack1 and rack2", err)
	}
	hosts, err := rack1.store.Hosts(context.Background())
	if err != nil || len(hosts) != 1 {
		t.Errorf("hosts after the refused start = %+v, %v; want rack1 only", hosts, err)
	}
	devs, _ := rack1.store.LabDevices(context.Background())
	if len(devs) != 2 {
		t.Errorf("lab devices after the refused start = %+v", devs)
	}
}

// A second daemon with a live host's name does not start: it waits out the
// first's lease, sees it renewed, and stops with an error naming the first,
// which goes on running jobs. A daemon that replaces a killed one waits for
// the killed one's lease to run out, then starts.
func TestHostsNameTwice(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	fakes := map[string]*daemontest.FakeNode{}
	r := newHostRunner(0)
	rack1, err := startHost(t, dbURL, "rack1", fakes, []string{"n1"}, r.forHost("rack1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = startHost(t, dbURL, "rack1", fakes, []string{"n1"}, r.forHost("twin"))
	var taken *store.HostNameTakenError
	if !errors.As(err, &taken) || taken.Host.Name != "rack1" || taken.Host.API == "" ||
		!strings.Contains(err.Error(), "host rack1 is served by a labctl serve started at") {
		t.Fatalf("a second daemon named rack1 = %v, want refused naming the first", err)
	}
	job := submitVia(t, rack1.client, "name = \"after-twin\"\ndevice = \"n1\"\n")
	if end, _ := follow(t, rack1.client, job.ID); end.Outcome != "complete" {
		t.Errorf("job after the refused twin: %s (%s)", end.Outcome, end.Reason)
	}
	if got := r.runsOf(job.ID); len(got) != 1 || got[0] != "rack1/n1" {
		t.Errorf("the job ran %v, want on rack1 once", got)
	}

	// rack1 stops renewing (as if killed): its successor waits for the
	// lease to run out and takes over.
	rack1.store.cut.Store(true)
	cut := time.Now()
	rack1b, err := startHost(t, dbURL, "rack1", fakes, []string{"n1"}, r.forHost("rack1b"))
	if err != nil {
		t.Fatalf("the successor of a killed rack1: %v", err)
	}
	t.Logf("the successor started %s after its predecessor stopped renewing (lease %s)", time.Since(cut).Round(time.Millisecond), testLease)
	next := submitVia(t, rack1b.client, "name = \"successor\"\ndevice = \"n1\"\n")
	if end, _ := follow(t, rack1b.client, next.ID); end.Outcome != "complete" {
		t.Errorf("job on the successor: %s (%s)", end.Outcome, end.Reason)
	}
	if got := r.runsOf(next.ID); len(got) != 1 || got[0] != "rack1b/n1" {
		t.Errorf("the job ran %v, want on the successor once", got)
	}
}

// A host whose clock is off the database's by more than a quarter of the
// lease does not join: it would judge the other hosts' leases wrong. It
// writes nothing.
func TestHostsClockSkew(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	// The offset is measured across a round trip to the database: on a
	// busy machine a minute ahead may read 59.999s.
	said := regexp.MustCompile(`this host's clock is (\S+) (ahead of|behind) the database's; with a lease of 2s the hosts' clocks must be within 500ms of it`)
	for _, tc := range []struct {
		off time.Duration
		how string
	}{
		{time.Minute, "ahead of"},
		{-3 * time.Second, "behind"},
	} {
		st, err := store.OpenPostgres(context.Background(), dbURL, "")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		lab := &devices.Lab{Config: devices.Config{Name: "test", StateDir: t.TempDir()}}
		_, err = daemon.New(context.Background(), daemon.Config{Lab: lab, Nodes: testNodes{}, Store: st, Run: newHostRunner(0).forHost("skewed"),
			Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return time.Now().Add(tc.off) },
			Host: &daemon.HostConfig{Name: "skewed", Lease: testLease, Poll: testPoll}})
		if err == nil || !strings.Contains(err.Error(), "NTP") {
			t.Fatalf("a host %s off the database's clock: %v, want a refusal naming NTP", tc.off, err)
		}
		m := said.FindStringSubmatch(err.Error())
		if m == nil {
			t.Fatalf("a host %s off the database's clock: %v, want %q", tc.off, err, said)
		}
		got, perr := time.ParseDuration(m[1])
		if perr != nil || m[2] != tc.how || (got-tc.off.Abs()).Abs() > time.Second {
			t.Errorf("a host %s off the database's clock is said to be %s %s", tc.off, m[1], m[2])
		}
		if hosts, err := st.Hosts(context.Background()); err != nil || len(hosts) != 0 {
			t.Errorf("hosts after the refusal = %+v, %v; want none", hosts, err)
		}
	}
}

// The database goes away for longer than the leases and comes back:
// running jobs go on and their ends are recorded when it returns, submits
// and queries answer 503 meanwhile, no host takes another for lost, and
// everything works again without a restart.
func TestHostsDatabaseAway(t *testing.T) {
	t.Parallel()
	srv, err := pgtest.Start()
	if err != nil {
		if os.Getenv("LABCTL_REQUIRE_SIMLAB") != "1" {
			t.Skipf("SKIPPED: PostgreSQL unavailable: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	dbURL, err := srv.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	r := newHostRunner(0)
	fakes := map[string]*daemontest.FakeNode{}
	rack1, err := startHost(t, dbURL, "rack1", fakes, []string{"a1", "a2"}, r.forHost("rack1"))
	if err != nil {
		t.Fatal(err)
	}
	rack2, err := startHost(t, dbURL, "rack2", fakes, []string{"b1"}, r.forHost("rack2"))
	if err != nil {
		t.Fatal(err)
	}
	a := submitVia(t, rack2.client, "name = \"hold-a\"\ndevice = \"a1\"\n")
	b := submitVia(t, rack1.client, "name = \"hold-b\"\ndevice = \"b1\"\n")
	r.waitStarted(t, a.ID)
	r.waitStarted(t, b.ID)
	srv.Pause()
	down := time.Now()
	_, err = rack1.client.Submit(daemontest.Context(t), labctl.SubmitRequest{File: "job.toml", Dir: "/", Spec: daemontest.JobText(t, "device = \"a2\"\n")})
	if !errors.Is(err, labctl.ErrUnavailable) || !strings.Contains(err.Error(), "store") {
		t.Errorf("submit while the database is away = %v, want 503 naming the store", err)
	}
	if _, err := rack2.client.Jobs(daemontest.Context(t), labctl.JobFilter{}); !errors.Is(err, labctl.ErrUnavailable) {
		t.Errorf("jobs while the database is away = %v, want 503", err)
	}
	// The jobs end while it is away.
	ctx := daemontest.Context(t)
	// (Cancel returns once the job has ended; the answer, read from the
	// store, is 503.)
	rack1.d.Cancel(ctx, a.ID)
	rack2.d.Cancel(ctx, b.ID)
	for _, id := range []int64{a.ID, b.ID} {
		r.mu.Lock()
		cause := r.causes[fmt.Sprint(id)]
		r.mu.Unlock()
		if cause == nil {
			t.Errorf("job %d still runs after its cancel", id)
		}
	}
	// Away for longer than the lease, then back.
	for time.Since(down) < 2*testLease {
		time.Sleep(testLease / 4)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	t.Logf("database away for %s", time.Since(down).Round(time.Millisecond))
	probe, err := store.OpenPostgres(context.Background(), dbURL, "")
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	for _, id := range []int64{a.ID, b.ID} {
		rec := waitStored(t, probe, id, "finished", func(j store.Job) bool { return j.State == store.Finished })
		if rec.Outcome != "canceled" || strings.Contains(rec.Reason, "lost") {
			t.Errorf("job %d after the database came back: %s %q", id, rec.Outcome, rec.Reason)
		}
		if got := r.runsOf(id); len(got) != 1 {
			t.Errorf("job %d ran %v", id, got)
		}
	}
	// Everything works again, without a restart: a submit answers once
	// the daemon has recorded the ends it kept.
	deadline := time.Now().Add(time.Minute)
	var next labctl.Job
	for {
		next, err = rack2.client.Submit(daemontest.Context(t), labctl.SubmitRequest{File: "job.toml", Dir: "/", Spec: daemontest.JobText(t, "name = \"after\"\ndevice = \"a2\"\n")})
		if err == nil {
			break
		}
		if !errors.Is(err, labctl.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("submit after the database came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if end, _ := follow(t, rack2.client, next.ID); end.Outcome != "complete" || end.Host != "rack1" {
		t.Errorf("job after the database came back: %s on %s", end.Outcome, end.Host)
	}
	for _, h := range []*labHost{rack1, rack2} {
		if strings.Contains(h.log.String(), "its host is lost") {
			t.Errorf("host %s ended another host's job as lost after a database outage", h.name)
		}
	}
}

package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/daemon/daemontest"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/store"
)

var errStoreFull = errors.New("database or disk is full (test)")

// flakyStore is a store whose writes fail while failing is set (a full
// disk), and whose next loseClaim claims, loseFinish finishes and
// loseClaimedCreate inserts of a job stored claimed commit but report an
// error (a timeout after the commit). refuseClaims stores a job submitted
// claimed as queued (a host whose lease did not hold). It records the
// state each job was stored in and counts the claims.
type flakyStore struct {
	store.Store
	failing           atomic.Bool
	refuseClaims      atomic.Bool
	loseClaim         atomic.Int32
	loseFinish        atomic.Int32
	loseClaimedCreate atomic.Int32
	claims            atomic.Int32

	mu      sync.Mutex
	created map[int64]string // the state CreateJob stored each job in
}

// wrap is daemontest.Options.WrapStore: s behind the flaky store.
func (s *flakyStore) wrap(st store.Store) store.Store {
	s.Store = st
	return s
}

func (s *flakyStore) CreateJob(ctx context.Context, j store.Job) (store.Job, error) {
	if s.failing.Load() {
		return store.Job{}, errStoreFull
	}
	if s.refuseClaims.Load() {
		j.RunDevice = ""
	}
	got, err := s.Store.CreateJob(ctx, j)
	if err != nil {
		return got, err
	}
	s.mu.Lock()
	if s.created == nil {
		s.created = map[int64]string{}
	}
	s.created[got.ID] = got.State
	s.mu.Unlock()
	if got.State == store.Running && s.loseClaimedCreate.Add(-1) >= 0 {
		return store.Job{}, context.DeadlineExceeded
	}
	return got, nil
}

// createdAs returns the state CreateJob stored job id in.
func (s *flakyStore) createdAs(id int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created[id]
}

func (s *flakyStore) ClaimFirst(ctx context.Context, ids []int64, device string, at time.Time) (int64, error) {
	s.claims.Add(1)
	if s.failing.Load() {
		return 0, errStoreFull
	}
	id, err := s.Store.ClaimFirst(ctx, ids, device, at)
	if err == nil && s.loseClaim.Add(-1) >= 0 {
		return 0, context.DeadlineExceeded
	}
	return id, err
}

func (s *flakyStore) FinishJob(ctx context.Context, id int64, from string, f store.Finish) error {
	if s.failing.Load() {
		return errStoreFull
	}
	err := s.Store.FinishJob(ctx, id, from, f)
	if err == nil && s.loseFinish.Add(-1) >= 0 {
		return context.DeadlineExceeded
	}
	return err
}

func (s *flakyStore) SetDevices(ctx context.Context, devs []store.Device) error {
	if s.failing.Load() {
		return errStoreFull
	}
	return s.Store.SetDevices(ctx, devs)
}

func (s *flakyStore) CheckWrite(ctx context.Context) error {
	if s.failing.Load() {
		return errStoreFull
	}
	return s.Store.CheckWrite(ctx)
}

func (s *flakyStore) DeleteFinishedJobs(ctx context.Context, before time.Time, keep, limit int) ([]int64, error) {
	if s.failing.Load() {
		return nil, errStoreFull
	}
	return s.Store.DeleteFinishedJobs(ctx, before, keep, limit)
}

// stored reads a job from the store itself, not through the daemon.
func stored(t *testing.T, l *daemontest.Lab, id int64) store.Job {
	t.Helper()
	rec, err := l.Store.Job(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// A store that fails writes for a while loses no job's end: the ends show
// through the API at once, submits get 503 with the reason meanwhile, the
// devices go back to idle, and once the store writes again every end is
// recorded, each job having run exactly once.
func TestStoreFailsWritesThenRecovers(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	fs := &flakyStore{}
	l := daemontest.Start(t, daemontest.Options{Nodes: 2, Fake: true, Run: r.run,
		WrapStore: fs.wrap})
	l.WaitIdle()
	a := l.Submit(daemontest.JobText(t, "name = \"a\"\ndevice = \"node1\"\n"))
	b := l.Submit(daemontest.JobText(t, "name = \"b\"\ndevice = \"node2\"\n"))
	r.waitStarted(t, 2)
	c := l.Submit(daemontest.JobText(t, "name = \"c\"\ndevice_type = \"sim\"\n"))

	fs.failing.Store(true)
	r.release <- "complete"
	r.release <- "failed"
	outcomes := map[int64]string{}
	for _, id := range []int64{a.ID, b.ID} {
		waitFor(t, fmt.Sprintf("job %d to show finished", id), func() bool {
			j, err := l.Daemon.Job(ctx(t), id)
			if err == nil && j.State == labctl.JobFinished {
				outcomes[id] = j.Outcome
				return true
			}
			return false
		})
		if rec := stored(t, l, id); rec.State != store.Running {
			t.Errorf("job %d is %s in a store that cannot write", id, rec.State)
		}
		if j, err := l.Daemon.Job(ctx(t), id); err != nil || j.Result == nil || j.Result.Outcome != outcomes[id] {
			t.Errorf("job %d through the API: %+v, %v; want its results", id, j, err)
		}
	}
	var got []string
	for _, o := range outcomes {
		got = append(got, o)
	}
	if slices.Sort(got); !slices.Equal(got, []string{"complete", "failed"}) {
		t.Errorf("outcomes %v, want complete and failed", outcomes)
	}
	list, err := l.Daemon.Jobs(ctx(t), labctl.JobFilter{States: []string{labctl.JobRunning}})
	if err != nil || len(list) != 0 {
		t.Errorf("running jobs = %+v, %v; want none", list, err)
	}
	_, err = l.Daemon.Submit(ctx(t), labctl.SubmitRequest{File: "job.toml", Dir: "/", Spec: daemontest.JobText(t, "name = \"d\"\ndevice_type = \"sim\"\n")})
	if !errors.Is(err, labctl.ErrUnavailable) || !strings.Contains(err.Error(), errStoreFull.Error()) {
		t.Errorf("Submit while the store cannot write = %v, want ErrUnavailable with the store's error", err)
	}
	l.WaitDevice("node1", labctl.DeviceIdle)
	l.WaitDevice("node2", labctl.DeviceIdle)
	waitFor(t, "the store to refuse c's start", func() bool { return strings.Contains(l.Log(), "take job off the queue") })
	if got := r.order(); len(got) != 2 {
		t.Errorf("started %v while the store could not record a start", got)
	}
	// Maintenance set while the store cannot write is recorded once it can
	// (a restart would otherwise put the device back in service).
	if _, err := l.Daemon.Maintenance(ctx(t), "node2", "fan replaced"); err != nil {
		t.Fatal(err)
	}

	fs.failing.Store(false)
	waitFor(t, "node2's maintenance to reach the store", func() bool {
		devs, err := l.Store.Devices(context.Background())
		i := slices.IndexFunc(devs, func(d store.Device) bool { return d.Name == "node2" })
		return err == nil && i >= 0 && devs[i].Maintenance && strings.HasPrefix(devs[i].MaintenanceReason, "fan replaced")
	})
	for _, id := range []int64{a.ID, b.ID} {
		waitFor(t, fmt.Sprintf("job %d to reach the store", id), func() bool { return stored(t, l, id).State == store.Finished })
		if rec := stored(t, l, id); rec.Outcome != outcomes[id] || len(rec.Result) == 0 {
			t.Errorf("job %d in the store: %s %q, result %d bytes; want %s with its results", id, rec.Outcome, rec.Reason, len(rec.Result), outcomes[id])
		}
	}
	r.waitStarted(t, 3)
	r.release <- "complete"
	if j := l.Wait(c.ID); j.Outcome != "complete" {
		t.Errorf("job c: %+v", j)
	}
	if got := slices.Sorted(slices.Values(r.order())); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("jobs started %v, want a, b and c once each", got)
	}
	d := l.Submit(daemontest.JobText(t, "name = \"d\"\ndevice_type = \"sim\"\n"))
	r.release <- "complete"
	if j := l.Wait(d.ID); j.Outcome != "complete" {
		t.Errorf("job d after the store recovered: %+v", j)
	}
	if !strings.Contains(l.Log(), "recorded the end of a job the store had refused") {
		t.Errorf("the daemon did not log the recovery")
	}
}

// A claim or a finish that committed but whose answer was lost is not
// done twice: the job runs once and its end is recorded once.
func TestLostStoreAnswers(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	fs := &flakyStore{}
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run,
		WrapStore: fs.wrap})
	l.WaitIdle()
	// first is stored claimed (node1 is free); a waits, and its worker
	// claims it when first ends.
	l.Submit(daemontest.JobText(t, "name = \"first\"\ndevice = \"node1\"\n"))
	r.waitStarted(t, 1)
	a := l.Submit(daemontest.JobText(t, "name = \"a\"\ndevice = \"node1\"\n"))
	fs.loseClaim.Store(1)
	r.release <- "complete"
	r.waitStarted(t, 2)
	fs.loseFinish.Store(1)
	r.release <- "complete"
	if j := l.Wait(a.ID); j.Outcome != "complete" {
		t.Errorf("job a: %+v", j)
	}
	waitFor(t, "the end to reach the store", func() bool { return stored(t, l, a.ID).State == store.Finished })
	if rec := stored(t, l, a.ID); rec.Outcome != "complete" || rec.RunDevice != "node1" {
		t.Errorf("stored: %+v", rec)
	}
	waitFor(t, "the daemon to take jobs again", func() bool {
		_, err := l.Daemon.Submit(ctx(t), labctl.SubmitRequest{File: "job.toml", Dir: "/", Spec: daemontest.JobText(t, "name = \"b\"\ndevice = \"node1\"\n")})
		return err == nil
	})
	r.waitStarted(t, 3)
	r.release <- "complete"
	if got := r.order(); !slices.Equal(got, []string{"first", "a", "b"}) {
		t.Errorf("started %v, want first, a, b, once each", got)
	}
}

type noNodes struct{}

func (noNodes) Node(name string) (*labctl.Node, error) { return nil, fmt.Errorf("no node %s", name) }

// The daemon does not start on a store that cannot write, nor on a state
// directory it cannot write, and says why.
func TestRefusesToStartUnwritable(t *testing.T) {
	state := t.TempDir()
	s, err := store.OpenSQLite(filepath.Join(state, "labctl.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fs := &flakyStore{Store: s}
	fs.failing.Store(true)
	lab := &devices.Lab{Config: devices.Config{Name: "test", StateDir: state}}
	_, err = daemon.New(context.Background(), daemon.Config{Lab: lab, Nodes: noNodes{}, Store: fs})
	if err == nil || !strings.Contains(err.Error(), errStoreFull.Error()) {
		t.Errorf("New on a store that cannot write = %v, want an error with the store's", err)
	}

	file := filepath.Join(t.TempDir(), "not-a-dir")
	os.WriteFile(file, nil, 0o600)
	lab = &devices.Lab{Config: devices.Config{Name: "test", StateDir: file}}
	_, err = daemon.New(context.Background(), daemon.Config{Lab: lab, Nodes: noNodes{}, Store: s})
	if err == nil || !strings.Contains(err.Error(), "state directory") {
		t.Errorf("New on a state directory that is a file = %v, want a state directory error", err)
	}
}

// mountTmpfs mounts a tmpfs of size at a new directory for the test. It
// skips the test loudly where mounting is not possible, and fails it with
// LABCTL_REQUIRE_SIMLAB=1 (make test runs as root and must not skip).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0750", "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("SKIPPED: cannot mount a tmpfs (needs root): %v: %s", err, out)
		if os.Getenv("LABCTL_REQUIRE_SIMLAB") == "1" {
			t.Fatalf("LABCTL_REQUIRE_SIMLAB=1: %s", msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// A real read-only database (its file system mounted read-only; root
// ignores file modes) stops the daemon at start-up with the reason.
func TestRefusesToStartOnReadOnlyDatabase(t *testing.T) {
	dir := mountTmpfs(t, "16m")
	path := filepath.Join(dir, "labctl.db")
	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateJob(context.Background(), store.Job{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v: %s", err, out)
	}
	s, err = store.OpenSQLite(path)
	if err == nil {
		defer s.Close()
		lab := &devices.Lab{Config: devices.Config{Name: "test", StateDir: t.TempDir()}}
		_, err = daemon.New(context.Background(), daemon.Config{Lab: lab, Nodes: noNodes{}, Store: s})
	}
	if err == nil || !strings.Contains(err.Error(), "read") {
		t.Errorf("starting on a read-only database = %v, want an error that says it cannot write", err)
	}
	t.Logf("start-up error: %v", err)
}

// A state directory that fills up mid-job loses neither the job's end
// nor the daemon: the end shows at once, and reaches the store once
// there is space again.
func TestDiskFullMidJob(t *testing.T) {
	state := mountTmpfs(t, "8m")
	r := newFakeRunner()
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run, StateDir: state})
	l.WaitIdle()
	a := l.Submit(daemontest.JobText(t, "name = \"a\"\ndevice = \"node1\"\n"))
	r.waitStarted(t, 1)

	filler := filepath.Join(state, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	r.release <- "complete"
	waitFor(t, "job a to show finished", func() bool {
		j, err := l.Daemon.Job(ctx(t), a.ID)
		return err == nil && j.State == labctl.JobFinished && j.Outcome == "complete"
	})
	refused := stored(t, l, a.ID).State == store.Running
	_, submitErr := l.Daemon.Submit(ctx(t), labctl.SubmitRequest{File: "job.toml", Dir: "/", Spec: daemontest.JobText(t, "name = \"b\"\ndevice = \"node1\"\n")})
	t.Logf("disk full: the store refused the end: %v; a submit: %v", refused, submitErr)
	if refused && !errors.Is(submitErr, labctl.ErrUnavailable) {
		t.Errorf("Submit while the store cannot record ends = %v, want ErrUnavailable", submitErr)
	}
	l.WaitDevice("node1", labctl.DeviceIdle)

	os.Remove(filler)
	waitFor(t, "the end to reach the store", func() bool { return stored(t, l, a.ID).State == store.Finished })
	if rec := stored(t, l, a.ID); rec.Outcome != "complete" {
		t.Errorf("stored: %+v", rec)
	}
	if submitErr == nil {
		r.release <- "complete"
	} else {
		waitFor(t, "the daemon to take jobs again", func() bool {
			_, err := l.Daemon.Submit(ctx(t), labctl.SubmitRequest{File: "job.toml", Dir: "/", Spec: daemontest.JobText(t, "name = \"b\"\ndevice = \"node1\"\n")})
			return err == nil
		})
		r.release <- "complete"
	}
	r.waitStarted(t, 2)
	if got := r.order(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("started %v, want a then b, once each", got)
	}
}

// otherHostStore is a store on which another host (rack9) claims each
// job for the same device name just before this daemon does.
type otherHostStore struct {
	store.Store
	other interface {
		store.Store
		store.Hosts
	}
}

func (s *otherHostStore) ClaimFirst(ctx context.Context, ids []int64, device string, at time.Time) (int64, error) {
	if _, err := s.other.ClaimFirst(ctx, ids, device, at); err != nil {
		return 0, fmt.Errorf("rack9's claim: %w", err)
	}
	return s.Store.ClaimFirst(ctx, ids, device, at)
}

// A claim that finds its job running under another host's claim, even on
// a device of the same name, leaves it to that host: it is not this
// daemon's own claim whose answer was lost, and it does not run here.
func TestClaimMeetsAnotherHostsClaim(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	state := t.TempDir()
	wrapped := &otherHostStore{}
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run, StateDir: state,
		WrapStore: func(s store.Store) store.Store {
			other, err := store.OpenSQLite(filepath.Join(state, "labctl.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { other.Close() })
			other.SetHost("rack9")
			now := time.Now()
			if err := other.RegisterHost(context.Background(), now, store.Host{Name: "rack9", API: "https://rack9:8470", Started: now, LeaseUntil: now.Add(time.Hour)}, nil); err != nil {
				t.Fatal(err)
			}
			wrapped.Store, wrapped.other = s, other
			return wrapped
		}})
	l.WaitIdle()
	// The first job is stored claimed (the device is free); a waits in
	// the queue and is claimed when the first ends.
	l.Submit(daemontest.JobText(t, "name = \"first\"\ndevice = \"node1\"\n"))
	r.waitStarted(t, 1)
	a := l.Submit(daemontest.JobText(t, "name = \"a\"\ndevice = \"node1\"\n"))
	r.release <- "complete"
	waitFor(t, "the claim to meet rack9's", func() bool {
		return strings.Contains(l.Log(), "job not taken off the queue: it changed") || len(r.order()) > 1
	})
	if got := r.order(); !slices.Equal(got, []string{"first"}) {
		t.Errorf("started %v here, want first only: rack9 holds a's claim", got)
	}
	if rec := stored(t, l, a.ID); rec.State != store.Running || rec.Host != "rack9" || rec.RunDevice != "node1" {
		t.Errorf("stored: %+v, want running under rack9's claim on node1", rec)
	}
	if strings.Contains(l.Log(), "answer was lost") {
		t.Errorf("the daemon took rack9's claim for its own lost answer:\n%s", l.Log())
	}
}

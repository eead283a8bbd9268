// Package storetest is the conformance suite of job stores: every store
// implementation (SQLite, PostgreSQL) runs Run against itself,
// so that the daemon can rely on the same behaviour from each.
package storetest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl/store"
)

// Opener opens the store under test. Each call of the function newDB
// returns opens a fresh, empty database; calling the opener it returns
// again opens the same database (after the previous one was closed), to
// check that what was committed survives.
type Opener func(t *testing.T) (open func() (store.Store, error))

// Run runs the suite.
func Run(t *testing.T, newDB Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func() (store.Store, error))
	}{
		{"CreateAndRead", testCreateAndRead},
		{"CreateBurst", testCreateBurst},
		{"NotFound", testNotFound},
		{"List", testList},
		{"Claim", testClaim},
		{"ClaimRace", testClaimRace},
		{"ClaimFirst", testClaimFirst},
		{"ClaimFirstRace", testClaimFirstRace},
		{"CreateClaimed", testCreateClaimed},
		{"CreateClaimedBurst", testCreateClaimedBurst},
		{"Finish", testFinish},
		{"Reopen", testReopen},
		{"Devices", testDevices},
		{"Attempts", testAttempts},
		{"Reservations", testReservations},
		{"Audit", testAudit},
		{"CheckWrite", testCheckWrite},
		{"DeleteFinished", testDeleteFinished},
		{"HostsRegister", testHostsRegister},
		{"HostsNameTaken", testHostsNameTaken},
		{"HostsClaim", testHostsClaim},
		{"HostsCreateClaimed", testHostsCreateClaimed},
		{"HostsLost", testHostsLost},
		{"HostsClaimRace", testHostsClaimRace},
		{"HostsClaimFirstRace", testHostsClaimFirstRace},
		{"HostsRetention", testHostsRetention},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newDB(t)) })
	}
}

func mustOpen(t *testing.T, open func() (store.Store, error)) store.Store {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// at is a fixed time with nanoseconds, to check that times keep them.
var at = time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)

func sample(name string) store.Job {
	return store.Job{
		Name: name, File: name + ".toml", Dir: "/srv/jobs", Spec: "name = \"" + name + "\"\n# ünïcode\n",
		DeviceType: "simlab-qemu", Tags: []string{"x86", "simlab"}, Priority: "high", Submitter: "ci",
		Submitted: at,
	}
}

func create(t *testing.T, s store.Store, j store.Job) store.Job {
	t.Helper()
	got, err := s.CreateJob(context.Background(), j)
	if err != nil {
		t.Fatalf("CreateJob(%s) = %v", j.Name, err)
	}
	return got
}

func get(t *testing.T, s store.Store, id int64) store.Job {
	t.Helper()
	j, err := s.Job(context.Background(), id)
	if err != nil {
		t.Fatalf("Job(%d) = %v", id, err)
	}
	return j
}

func same(a, b store.Job) error {
	switch {
	case a.ID != b.ID || a.Name != b.Name || a.File != b.File || a.Dir != b.Dir || a.Spec != b.Spec:
		return fmt.Errorf("identity differs: %d %q %q %q vs %d %q %q %q", a.ID, a.Name, a.File, a.Dir, b.ID, b.Name, b.File, b.Dir)
	case a.Device != b.Device || a.DeviceType != b.DeviceType || !slices.Equal(a.Tags, b.Tags):
		return fmt.Errorf("placement differs: %q %q %q vs %q %q %q", a.Device, a.DeviceType, a.Tags, b.Device, b.DeviceType, b.Tags)
	case a.Priority != b.Priority || a.Submitter != b.Submitter || a.State != b.State || a.RunDevice != b.RunDevice:
		return fmt.Errorf("state differs: %s %s %s %s vs %s %s %s %s", a.Priority, a.Submitter, a.State, a.RunDevice, b.Priority, b.Submitter, b.State, b.RunDevice)
	case a.Outcome != b.Outcome || a.Reason != b.Reason || string(a.Result) != string(b.Result):
		return fmt.Errorf("end differs: %s %q %q vs %s %q %q", a.Outcome, a.Reason, a.Result, b.Outcome, b.Reason, b.Result)
	case !a.Submitted.Equal(b.Submitted) || !a.Started.Equal(b.Started) || !a.Finished.Equal(b.Finished):
		return fmt.Errorf("times differ: %v %v %v vs %v %v %v", a.Submitted, a.Started, a.Finished, b.Submitted, b.Started, b.Finished)
	}
	return nil
}

func testCreateAndRead(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	a := create(t, s, sample("a"))
	b := create(t, s, store.Job{Name: "b", File: "b.toml", Dir: "/", Spec: "x", Device: "node1", Priority: "low"})
	if a.ID <= 0 || b.ID <= a.ID {
		t.Errorf("IDs %d then %d: want positive and increasing", a.ID, b.ID)
	}
	if a.State != store.Queued || !a.Submitted.Equal(at) {
		t.Errorf("created job: state %q submitted %v, want queued at %v", a.State, a.Submitted, at)
	}
	if b.Submitted.IsZero() {
		t.Error("a job created without a submission time did not get one")
	}
	if err := same(get(t, s, a.ID), a); err != nil {
		t.Errorf("Job(%d) differs from what CreateJob returned: %v", a.ID, err)
	}
	if got := get(t, s, b.ID); got.Tags != nil || got.Device != "node1" {
		t.Errorf("Job(%d) tags %q device %q, want nil and node1", b.ID, got.Tags, got.Device)
	}
}

// Jobs submitted at once each get an ID of their own, under which the
// store keeps that job.
func testCreateBurst(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	const n = 40
	got := make([]store.Job, n)
	audits := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			j, err := s.CreateJob(ctx, sample(fmt.Sprintf("burst%d", i)))
			if err != nil {
				t.Errorf("CreateJob %d = %v", i, err)
			}
			got[i] = j
			// Each submit is audited: entries of a burst too.
			audits[i], err = s.AddAudit(ctx, store.AuditEntry{At: at, Who: "ci", Action: "submit", Job: j.ID, Detail: fmt.Sprintf("burst%d", i)})
			if err != nil {
				t.Errorf("AddAudit %d = %v", i, err)
			}
		})
	}
	wg.Wait()
	entries, err := s.Audit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	detail := map[int64]string{}
	for _, e := range entries {
		detail[e.ID] = e.Detail
	}
	for i, id := range audits {
		if want := fmt.Sprintf("burst%d", i); detail[id] != want {
			t.Errorf("audit entry %d of %s reads back as %q", id, want, detail[id])
		}
	}
	seen := map[int64]bool{}
	for i, j := range got {
		if seen[j.ID] {
			t.Errorf("job %d: ID %d given twice", i, j.ID)
		}
		seen[j.ID] = true
		if r := get(t, s, j.ID); r.Name != fmt.Sprintf("burst%d", i) || r.State != store.Queued {
			t.Errorf("job %d (ID %d) reads back as %q, %s", i, j.ID, r.Name, r.State)
		}
	}
}

func testNotFound(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	if _, err := s.Job(ctx, 42); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Job(42) on an empty store = %v, want ErrNotFound", err)
	}
	if err := s.ClaimJob(ctx, 42, "node1", at); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ClaimJob(42) = %v, want ErrNotFound", err)
	}
	if err := s.FinishJob(ctx, 42, store.Running, store.Finish{Outcome: "complete", At: at}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("FinishJob(42) = %v, want ErrNotFound", err)
	}
}

func ids(jobs []store.Job) []int64 {
	var out []int64
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

// manyIDs returns n job IDs from first on (no job has them when first is
// negative).
func manyIDs(first int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = first + int64(i)
	}
	return out
}

func testList(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	var all []int64
	for i := range 5 {
		all = append(all, create(t, s, sample(fmt.Sprintf("j%d", i))).ID)
	}
	if err := s.ClaimJob(ctx, all[1], "node1", at); err != nil {
		t.Fatal(err)
	}
	if err := s.ClaimJob(ctx, all[3], "node2", at); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishJob(ctx, all[3], store.Running, store.Finish{Outcome: "complete", At: at}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		f    store.JobFilter
		want []int64
	}{
		{store.JobFilter{}, all},
		{store.JobFilter{Limit: 2}, all[3:]},
		{store.JobFilter{States: []string{store.Queued}}, []int64{all[0], all[2], all[4]}},
		{store.JobFilter{States: []string{store.Running, store.Finished}}, []int64{all[1], all[3]}},
		{store.JobFilter{Device: "node2"}, []int64{all[3]}},
		{store.JobFilter{States: []string{store.Queued}, Limit: 1}, []int64{all[4]}},
		{store.JobFilter{Limit: 2, Before: all[3]}, all[1:3]},
		{store.JobFilter{States: []string{store.Queued}, Before: all[4]}, []int64{all[0], all[2]}},
		{store.JobFilter{IDs: []int64{all[4], all[0], all[3], all[4] + 100}}, []int64{all[0], all[3], all[4]}},
		{store.JobFilter{States: []string{store.Queued}, IDs: []int64{all[0], all[1]}}, []int64{all[0]}},
		{store.JobFilter{IDs: all, Limit: 1}, all[4:]},
		// More IDs than one query names: the answers of the chunks in order.
		{store.JobFilter{IDs: append(manyIDs(-1200, 1200), all[3], all[0])}, []int64{all[0], all[3]}},
		{store.JobFilter{IDs: append(manyIDs(-1200, 1200), all...), Limit: 2}, all[3:]},
	}
	for _, tt := range tests {
		got, err := s.Jobs(ctx, tt.f)
		if err != nil {
			t.Fatalf("Jobs(%+v) = %v", tt.f, err)
		}
		if !slices.Equal(ids(got), tt.want) {
			t.Errorf("Jobs(%+v) = %v, want %v", tt.f, ids(got), tt.want)
		}
		if got, err := s.JobIDs(ctx, tt.f); err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("JobIDs(%+v) = %v, %v; want %v", tt.f, got, err, tt.want)
		}
	}
}

func testClaim(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	j := create(t, s, sample("a"))
	started := at.Add(time.Second)
	if err := s.ClaimJob(ctx, j.ID, "node1", started); err != nil {
		t.Fatalf("ClaimJob = %v", err)
	}
	got := get(t, s, j.ID)
	if got.State != store.Running || got.RunDevice != "node1" || !got.Started.Equal(started) {
		t.Errorf("claimed job: %s on %q since %v, want running on node1 since %v", got.State, got.RunDevice, got.Started, started)
	}
	if err := s.ClaimJob(ctx, j.ID, "node2", started); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second ClaimJob = %v, want ErrConflict", err)
	}
	if got := get(t, s, j.ID); got.RunDevice != "node1" {
		t.Errorf("a refused claim moved the job to %q", got.RunDevice)
	}
}

// A claim of several jobs takes the first of them, in the order given,
// that is still queued; none left is a conflict.
func testClaimFirst(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	a, b, c := create(t, s, sample("a")), create(t, s, sample("b")), create(t, s, sample("c"))
	if err := s.ClaimJob(ctx, b.ID, "node1", at); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishJob(ctx, a.ID, store.Queued, store.Finish{Outcome: "canceled", At: at}); err != nil {
		t.Fatal(err)
	}
	// a canceled, b running: c is the first still queued, though named last.
	got, err := s.ClaimFirst(ctx, []int64{a.ID, b.ID, 999, c.ID}, "node2", at)
	if err != nil || got != c.ID {
		t.Fatalf("ClaimFirst(a, b, 999, c) = %d, %v; want job c (%d)", got, err, c.ID)
	}
	if j := get(t, s, c.ID); j.State != store.Running || j.RunDevice != "node2" {
		t.Errorf("claimed job c: %s on %q, want running on node2", j.State, j.RunDevice)
	}
	got, err = s.ClaimFirst(ctx, []int64{a.ID, b.ID, 999, c.ID}, "node3", at)
	var refused *store.ClaimRefusedError
	if !errors.Is(err, store.ErrConflict) || !errors.As(err, &refused) {
		t.Errorf("ClaimFirst of jobs none of which is queued = %d, %v; want a ClaimRefusedError (ErrConflict)", got, err)
	} else if gone := slices.Sorted(slices.Values(refused.Gone)); !slices.Equal(gone, []int64{a.ID, b.ID, c.ID}) {
		t.Errorf("ClaimFirst refused: gone %v, want the canceled, the running and the claimed job %v", gone, []int64{a.ID, b.ID, c.ID})
	}
	d, e := create(t, s, sample("d")), create(t, s, sample("e"))
	got, err = s.ClaimFirst(ctx, []int64{e.ID, d.ID}, "node3", at)
	if err != nil || got != e.ID {
		t.Errorf("ClaimFirst(e, d) = %d, %v; want the first named, e (%d)", got, err, e.ID)
	}
	if j := get(t, s, d.ID); j.State != store.Queued {
		t.Errorf("job d not taken is %s, want queued", j.State)
	}
}

// A job created with a device to claim is stored running on it, as
// ClaimFirst leaves a job: it is never queued, a claim of it conflicts,
// it ends from running, and a listing by device finds it.
func testCreateClaimed(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	j := sample("claimed")
	j.RunDevice, j.Started = "node1", at.Add(time.Second)
	got := create(t, s, j)
	if got.State != store.Running || got.RunDevice != "node1" || !got.Started.Equal(at.Add(time.Second)) || got.Host != "" {
		t.Fatalf("CreateJob with a device = %s on %q since %v host %q; want running on node1 since %v, no host",
			got.State, got.RunDevice, got.Started, got.Host, at.Add(time.Second))
	}
	if err := same(get(t, s, got.ID), got); err != nil {
		t.Errorf("Job(%d) differs from what CreateJob returned: %v", got.ID, err)
	}
	if queued, err := s.Jobs(ctx, store.JobFilter{States: []string{store.Queued}}); err != nil || len(queued) != 0 {
		t.Errorf("queued jobs = %d, %v; want none", len(queued), err)
	}
	if on, err := s.Jobs(ctx, store.JobFilter{Device: "node1"}); err != nil || len(on) != 1 || on[0].ID != got.ID {
		t.Errorf("jobs on node1 = %+v, %v; want the claimed job", on, err)
	}
	if err := s.ClaimJob(ctx, got.ID, "node2", at); !errors.Is(err, store.ErrConflict) {
		t.Errorf("ClaimJob of a job stored claimed = %v, want ErrConflict", err)
	}
	if err := s.FinishJob(ctx, got.ID, store.Queued, store.Finish{Outcome: "canceled", At: at}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("FinishJob from queued of a job stored claimed = %v, want ErrConflict", err)
	}
	if err := s.FinishJob(ctx, got.ID, store.Running, store.Finish{Outcome: "complete", At: at.Add(time.Minute)}); err != nil {
		t.Errorf("FinishJob from running = %v", err)
	}
	// Without a start time it starts now; a retry is queued whatever it
	// names.
	j = sample("now")
	j.RunDevice = "node2"
	before := time.Now()
	if got := create(t, s, j); got.State != store.Running || got.Started.Before(before) {
		t.Errorf("CreateJob with a device, no start = %s since %v; want running since at least %v", got.State, got.Started, before)
	}
	r := sample("retry")
	r.RunDevice, r.Started = "node3", at
	retry, err := s.RetryJob(ctx, got.ID, r)
	if err != nil {
		t.Fatal(err)
	}
	if g := get(t, s, retry.ID); g.State != store.Queued || g.RunDevice != "" || !g.Started.IsZero() {
		t.Errorf("retry = %s on %q since %v; want queued, nowhere", g.State, g.RunDevice, g.Started)
	}
}

// Jobs created at once, some claimed and some not (one statement on
// PostgreSQL): each is stored as asked, under its own ID.
func testCreateClaimedBurst(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	const n = 40
	got := make([]store.Job, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			j := sample(fmt.Sprintf("burst%d", i))
			if i%2 == 0 {
				j.RunDevice, j.Started = fmt.Sprintf("node%d", i), at.Add(time.Duration(i))
			}
			var err error
			if got[i], err = s.CreateJob(context.Background(), j); err != nil {
				t.Errorf("CreateJob %d = %v", i, err)
			}
		})
	}
	wg.Wait()
	for i, j := range got {
		want, dev := store.Queued, ""
		if i%2 == 0 {
			want, dev = store.Running, fmt.Sprintf("node%d", i)
		}
		if j.Name != fmt.Sprintf("burst%d", i) || j.State != want || j.RunDevice != dev {
			t.Errorf("job %d returned %s %s on %q, want burst%d %s on %q", j.ID, j.Name, j.State, j.RunDevice, i, want, dev)
		}
		if err := same(get(t, s, j.ID), j); err != nil {
			t.Errorf("Job(%d) differs from what CreateJob returned: %v", j.ID, err)
		}
	}
}

// Claimers each claim from the same list of jobs until none is left:
// every job is taken exactly once, and no claim fails while a job is
// left that no one holds.
func testClaimFirstRace(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	var jobs []int64
	for i := range 24 {
		jobs = append(jobs, create(t, s, sample(fmt.Sprintf("j%d", i))).ID)
	}
	var claimers []Claimer
	for w := range 6 {
		claimers = append(claimers, Claimer{Store: s, Device: fmt.Sprintf("node%d", w)})
	}
	for id, w := range RaceClaimFirst(t, claimers, jobs, at) {
		if got := get(t, s, id); got.State != store.Running || got.RunDevice != w {
			t.Errorf("job %d is %s on %q, but %s won it", id, got.State, got.RunDevice, w)
		}
	}
}

// Many claimers race for the same jobs: each job is won exactly once.
func testClaimRace(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	var jobs []int64
	for i := range 10 {
		jobs = append(jobs, create(t, s, sample(fmt.Sprintf("j%d", i))).ID)
	}
	var claimers []Claimer
	for w := range 8 {
		claimers = append(claimers, Claimer{Store: s, Device: fmt.Sprintf("node%d", w)})
	}
	won := RaceClaims(t, claimers, jobs, at)
	for _, id := range jobs {
		if w, ok := won[id]; ok {
			if got := get(t, s, id); got.RunDevice != w {
				t.Errorf("job %d runs on %s, but %s won the claim", id, got.RunDevice, w)
			}
		}
	}
}

// Claimer is one worker of a claim race: it claims jobs through Store
// for Device.
type Claimer struct {
	Store  store.Store
	Device string
	// Name is how the race names the claimer's wins (Device if empty).
	Name string
}

// RaceClaims has every claimer claim every job at once (claims dated
// at) and returns each job's winner. It fails t for an answer other than
// success or ErrConflict, and for a job not won exactly once, which it
// leaves out of the map.
func RaceClaims(t *testing.T, claimers []Claimer, jobs []int64, at time.Time) map[int64]string {
	t.Helper()
	return race(t, claimers, jobs, func(c Claimer, name string, won func(int64)) {
		for _, id := range jobs {
			err := c.Store.ClaimJob(context.Background(), id, c.Device, at)
			switch {
			case err == nil:
				won(id)
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("ClaimJob(%d, %s) = %v", id, c.Device, err)
			}
		}
	})
}

// RaceClaimFirst has every claimer take jobs from the whole list with
// ClaimFirst at once, again and again until none is left for it
// (ErrConflict), and returns each job's winner, failing t as RaceClaims
// does.
func RaceClaimFirst(t *testing.T, claimers []Claimer, jobs []int64, at time.Time) map[int64]string {
	t.Helper()
	return race(t, claimers, jobs, func(c Claimer, name string, won func(int64)) {
		for {
			id, err := c.Store.ClaimFirst(context.Background(), jobs, c.Device, at)
			if errors.Is(err, store.ErrConflict) {
				return
			}
			if err != nil {
				t.Errorf("ClaimFirst for %s = %v", name, err)
				return
			}
			won(id)
		}
	})
}

// race runs claim for every claimer at once (name is how its wins are
// named: Claimer.Name, else its device) and returns each job's one
// winner (oneWinner).
func race(t *testing.T, claimers []Claimer, jobs []int64, claim func(c Claimer, name string, won func(id int64))) map[int64]string {
	t.Helper()
	var mu sync.Mutex
	wins := map[int64][]string{}
	var wg sync.WaitGroup
	for _, c := range claimers {
		name := cmp.Or(c.Name, c.Device)
		wg.Go(func() {
			claim(c, name, func(id int64) {
				mu.Lock()
				defer mu.Unlock()
				wins[id] = append(wins[id], name)
			})
		})
	}
	wg.Wait()
	return oneWinner(t, jobs, wins)
}

// oneWinner is each job's one winner of a race; it fails t for a job not
// won exactly once, which it leaves out.
func oneWinner(t *testing.T, jobs []int64, wins map[int64][]string) map[int64]string {
	t.Helper()
	won := map[int64]string{}
	for _, id := range jobs {
		if len(wins[id]) != 1 {
			t.Errorf("job %d claimed by %v, want exactly one claimer", id, wins[id])
			continue
		}
		won[id] = wins[id][0]
	}
	return won
}

func testFinish(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	ran := create(t, s, sample("ran"))
	queued := create(t, s, sample("queued"))
	if err := s.FinishJob(ctx, ran.ID, store.Running, store.Finish{Outcome: "complete", At: at}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("finishing a queued job as running = %v, want ErrConflict", err)
	}
	if err := s.ClaimJob(ctx, ran.ID, "node1", at); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishJob(ctx, ran.ID, store.Queued, store.Finish{Outcome: "canceled", At: at}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("canceling a running job as queued = %v, want ErrConflict", err)
	}
	end := at.Add(time.Minute)
	result := []byte(`{"id":"1","outcome":"failed"}`)
	if err := s.FinishJob(ctx, ran.ID, store.Running, store.Finish{Outcome: "failed", Reason: "test step x: fail", At: end, Result: result}); err != nil {
		t.Fatalf("FinishJob = %v", err)
	}
	got := get(t, s, ran.ID)
	if got.State != store.Finished || got.Outcome != "failed" || got.Reason != "test step x: fail" || !got.Finished.Equal(end) || string(got.Result) != string(result) {
		t.Errorf("finished job = %+v", got)
	}
	if err := s.FinishJob(ctx, ran.ID, store.Running, store.Finish{Outcome: "complete", At: end}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("finishing twice = %v, want ErrConflict", err)
	}
	if got := get(t, s, ran.ID); got.Outcome != "failed" {
		t.Errorf("a refused finish changed the outcome to %q", got.Outcome)
	}
	if err := s.FinishJob(ctx, queued.ID, store.Queued, store.Finish{Outcome: "canceled", Reason: "canceled by ci", At: end}); err != nil {
		t.Fatalf("canceling a queued job = %v", err)
	}
	if got := get(t, s, queued.ID); got.State != store.Finished || got.Outcome != "canceled" || !got.Started.IsZero() || got.Result != nil {
		t.Errorf("canceled queued job = %+v", got)
	}
	if err := s.ClaimJob(ctx, queued.ID, "node1", at); !errors.Is(err, store.ErrConflict) {
		t.Errorf("claiming a canceled job = %v, want ErrConflict", err)
	}
}

// What was committed is there after the store is closed and opened again.
func testReopen(t *testing.T, open func() (store.Store, error)) {
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := create(t, s, sample("a"))
	b := create(t, s, sample("b"))
	if err := s.ClaimJob(ctx, a.ID, "node1", at); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDevices(ctx, []store.Device{{Name: "node1", State: "maintenance", Reason: "fan", Since: at, Maintenance: true, MaintenanceReason: "fan"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	s = mustOpen(t, open)
	if got := get(t, s, a.ID); got.State != store.Running || got.RunDevice != "node1" {
		t.Errorf("after reopening, job a is %s on %q, want running on node1", got.State, got.RunDevice)
	}
	if got := get(t, s, b.ID); got.State != store.Queued {
		t.Errorf("after reopening, job b is %s, want queued", got.State)
	}
	c := create(t, s, sample("c"))
	if c.ID <= b.ID {
		t.Errorf("after reopening, a new job got ID %d, not above %d", c.ID, b.ID)
	}
	devs, err := s.Devices(ctx)
	if err != nil || len(devs) != 1 || !devs[0].Maintenance {
		t.Errorf("after reopening, devices = %+v, %v; want node1 in maintenance", devs, err)
	}
}

func testDevices(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	if devs, err := s.Devices(ctx); err != nil || len(devs) != 0 {
		t.Fatalf("Devices on an empty store = %v, %v", devs, err)
	}
	want := []store.Device{
		{Name: "node1", State: "idle", Since: at},
		{Name: "node2", State: "offline", Reason: "health check: bmc: no answer", Since: at.Add(time.Second)},
	}
	if err := s.SetDevices(ctx, []store.Device{want[1], {Name: "node1", State: "running", Since: at}}); err != nil {
		t.Fatalf("SetDevices = %v", err)
	}
	if err := s.SetDevices(ctx, []store.Device{want[0]}); err != nil {
		t.Fatalf("SetDevices = %v", err)
	}
	if err := s.SetDevices(ctx, nil); err != nil {
		t.Fatalf("SetDevices(nil) = %v", err)
	}
	got, err := s.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Devices = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.State != w.State || g.Reason != w.Reason || !g.Since.Equal(w.Since) || g.Maintenance != w.Maintenance {
			t.Errorf("Devices[%d] = %+v, want %+v", i, g, w)
		}
	}
}

func testAttempts(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	first := create(t, s, sample("flaky"))
	other := create(t, s, sample("other"))
	if got, err := s.Attempts(ctx, first.ID); err != nil || len(got) != 1 || got[0].ID != first.ID {
		t.Fatalf("Attempts of a job never retried = %v, %v; want just job %d", ids(got), err, first.ID)
	}
	if _, err := s.Attempts(ctx, 999); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Attempts(999) = %v, want ErrNotFound", err)
	}
	if _, err := s.RetryJob(ctx, 999, sample("flaky")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RetryJob(999) = %v, want ErrNotFound", err)
	}
	retry := sample("flaky")
	retry.Submitted = at.Add(time.Minute)
	second, err := s.RetryJob(ctx, first.ID, retry)
	if err != nil {
		t.Fatalf("RetryJob = %v", err)
	}
	if second.State != store.Queued || second.ID <= other.ID {
		t.Errorf("RetryJob = job %d %s, want a new queued job", second.ID, second.State)
	}
	if err := same(get(t, s, second.ID), second); err != nil {
		t.Errorf("the retry as stored: %v", err)
	}
	if _, err := s.RetryJob(ctx, first.ID, sample("flaky")); !errors.Is(err, store.ErrConflict) {
		t.Errorf("retrying job %d twice = %v, want ErrConflict", first.ID, err)
	}
	third, err := s.RetryJob(ctx, second.ID, sample("flaky"))
	if err != nil {
		t.Fatalf("RetryJob of the retry = %v", err)
	}
	want := []int64{first.ID, second.ID, third.ID}
	for _, id := range want {
		got, err := s.Attempts(ctx, id)
		if err != nil || !slices.Equal(ids(got), want) {
			t.Errorf("Attempts(%d) = %v, %v; want %v", id, ids(got), err, want)
		}
	}
	if got, err := s.Attempts(ctx, other.ID); err != nil || !slices.Equal(ids(got), []int64{other.ID}) {
		t.Errorf("Attempts(%d) = %v, %v; want just itself", other.ID, ids(got), err)
	}
	retries, err := s.Retries(ctx, []int64{first.ID, second.ID, other.ID, third.ID, 999})
	if err != nil || len(retries) != 2 || !retries[second.ID] || !retries[third.ID] {
		t.Errorf("Retries = %v, %v; want jobs %d and %d", retries, err, second.ID, third.ID)
	}
	if retries, err := s.Retries(ctx, nil); err != nil || len(retries) != 0 {
		t.Errorf("Retries of no jobs = %v, %v; want none", retries, err)
	}
	s.Close()
	s = mustOpen(t, open)
	if got, err := s.Attempts(ctx, third.ID); err != nil || !slices.Equal(ids(got), want) {
		t.Errorf("after reopening, Attempts = %v, %v; want %v", ids(got), err, want)
	}
}

func testReservations(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	if got, err := s.Reservations(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Reservations on an empty store = %v, %v", got, err)
	}
	a := store.Reservation{Device: "node2", Owner: "alice", Reason: "bisecting", Since: at, Until: at.Add(2 * time.Hour)}
	b := store.Reservation{Device: "node1", Owner: "bob", Since: at, Until: at.Add(time.Hour)}
	for _, r := range []store.Reservation{a, b} {
		if err := s.SetReservation(ctx, r); err != nil {
			t.Fatalf("SetReservation = %v", err)
		}
	}
	a.Until = a.Until.Add(time.Hour) // renewed
	if err := s.SetReservation(ctx, a); err != nil {
		t.Fatalf("SetReservation = %v", err)
	}
	s.Close()
	s = mustOpen(t, open)
	got, err := s.Reservations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Reservation{b, a}
	if len(got) != len(want) {
		t.Fatalf("Reservations = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Device != w.Device || g.Owner != w.Owner || g.Reason != w.Reason || !g.Since.Equal(w.Since) || !g.Until.Equal(w.Until) {
			t.Errorf("Reservations[%d] = %+v, want %+v", i, g, w)
		}
	}
	if err := s.DeleteReservation(ctx, "node1"); err != nil {
		t.Fatalf("DeleteReservation = %v", err)
	}
	if err := s.DeleteReservation(ctx, "node1"); err != nil {
		t.Errorf("DeleteReservation of none = %v", err)
	}
	if got, err := s.Reservations(ctx); err != nil || len(got) != 1 || got[0].Device != "node2" {
		t.Errorf("after DeleteReservation: %+v, %v", got, err)
	}
}

func testCheckWrite(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	if err := s.CheckWrite(context.Background()); err != nil {
		t.Errorf("CheckWrite on a writable store = %v", err)
	}
	a := create(t, s, sample("a"))
	if err := s.CheckWrite(context.Background()); err != nil {
		t.Errorf("CheckWrite = %v", err)
	}
	if got := get(t, s, a.ID); got.State != store.Queued {
		t.Errorf("CheckWrite changed a job: %+v", got)
	}
}

// Finished jobs go oldest first, by age and beyond a count; queued and
// running jobs stay, however old.
func testDeleteFinished(t *testing.T, open func() (store.Store, error)) {
	s := mustOpen(t, open)
	ctx := context.Background()
	if removed, err := s.DeleteFinishedJobs(ctx, at, 0, 0); err != nil || len(removed) != 0 {
		t.Errorf("DeleteFinishedJobs on an empty store = %v, %v", removed, err)
	}
	// Jobs 0-5 finish an hour apart from at; 6 runs, 7 is queued.
	var all []int64
	for i := range 8 {
		j := create(t, s, sample(fmt.Sprintf("j%d", i)))
		all = append(all, j.ID)
		if i == 7 {
			continue
		}
		if err := s.ClaimJob(ctx, j.ID, "node1", at); err != nil {
			t.Fatal(err)
		}
		if i == 6 {
			continue
		}
		if err := s.FinishJob(ctx, j.ID, store.Running, store.Finish{Outcome: "complete", At: at.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if removed, err := s.DeleteFinishedJobs(ctx, time.Time{}, 0, 0); err != nil || len(removed) != 0 {
		t.Errorf("DeleteFinishedJobs with no bound = %v, %v; want nothing removed", removed, err)
	}
	// Before at+2h30m: jobs 0, 1, 2, at most 2 at a time.
	removed, err := s.DeleteFinishedJobs(ctx, at.Add(150*time.Minute), 0, 2)
	if err != nil || !slices.Equal(removed, all[:2]) {
		t.Errorf("DeleteFinishedJobs(age, limit 2) = %v, %v; want %v", removed, err, all[:2])
	}
	removed, err = s.DeleteFinishedJobs(ctx, at.Add(150*time.Minute), 0, 2)
	if err != nil || !slices.Equal(removed, all[2:3]) {
		t.Errorf("DeleteFinishedJobs(age) again = %v, %v; want %v", removed, err, all[2:3])
	}
	// Keep the newest 2 finished: job 3 goes, 4 and 5 stay.
	removed, err = s.DeleteFinishedJobs(ctx, time.Time{}, 2, 0)
	if err != nil || !slices.Equal(removed, all[3:4]) {
		t.Errorf("DeleteFinishedJobs(keep 2) = %v, %v; want %v", removed, err, all[3:4])
	}
	// Everything finished, at any age: the running and the queued job stay.
	removed, err = s.DeleteFinishedJobs(ctx, at.Add(1000*time.Hour), 0, 0)
	if err != nil || !slices.Equal(removed, all[4:6]) {
		t.Errorf("DeleteFinishedJobs(all) = %v, %v; want %v", removed, err, all[4:6])
	}
	left, err := s.Jobs(ctx, store.JobFilter{})
	if err != nil || !slices.Equal(ids(left), all[6:]) {
		t.Errorf("left = %v, %v; want the running and the queued job %v", ids(left), err, all[6:])
	}
	if _, err := s.Job(ctx, all[0]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Job(removed) = %v, want ErrNotFound", err)
	}
}

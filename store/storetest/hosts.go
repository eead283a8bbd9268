package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labctl/labctl/store"
)

// hostsStore is the store of one host of a lab of several.
type hostsStore interface {
	store.Store
	store.Hosts
}

// hostStore opens the database as host name: a store of its own, as each
// host's daemon has.
func hostStore(t *testing.T, open func() (store.Store, error), name string) hostsStore {
	t.Helper()
	s := mustOpen(t, open)
	h, ok := s.(hostsStore)
	if !ok {
		t.Fatalf("%T does not implement store.Hosts", s)
	}
	h.SetHost(name)
	return h
}

func register(t *testing.T, s store.Hosts, name string, lease time.Time, devs ...string) {
	t.Helper()
	var list []store.LabDevice
	for _, d := range devs {
		list = append(list, store.LabDevice{Name: d, DeviceType: "simlab-qemu", Tags: []string{"rack-" + name}})
	}
	err := s.RegisterHost(context.Background(), at, store.Host{Name: name, API: "https://" + name + ":8470", Started: at, LeaseUntil: lease}, list)
	if err != nil {
		t.Fatalf("RegisterHost(%s) = %v", name, err)
	}
}

// Two hosts claiming one device: the second is refused with both names,
// and nothing of it is written.
func testHostsRegister(t *testing.T, open func() (store.Store, error)) {
	ctx := context.Background()
	a := hostStore(t, open, "rack1")
	b := hostStore(t, open, "rack2")
	register(t, a, "rack1", at.Add(time.Hour), "node1", "node2")
	err := b.RegisterHost(ctx, at, store.Host{Name: "rack2", API: "https://rack2:8470", Started: at, LeaseUntil: at.Add(time.Hour)},
		[]store.LabDevice{{Name: "node3", DeviceType: "x"}, {Name: "node2", DeviceType: "x"}})
	if !errors.Is(err, store.ErrDeviceTaken) || !strings.Contains(err.Error(), "device node2 is host rack1's, and host rack2 claims it too") {
		t.Fatalf("RegisterHost of a device another host has = %v, want ErrDeviceTaken naming both hosts", err)
	}
	hosts, err := b.Hosts(ctx)
	if err != nil || len(hosts) != 1 || hosts[0].Name != "rack1" || hosts[0].API != "https://rack1:8470" || !hosts[0].LeaseUntil.Equal(at.Add(time.Hour)) {
		t.Errorf("Hosts after a refused registration = %+v, %v; want rack1 only", hosts, err)
	}
	devs, err := b.LabDevices(ctx)
	if err != nil || len(devs) != 2 || devs[0].Name != "node1" || devs[1].Host != "rack1" || devs[1].Tags[0] != "rack-rack1" {
		t.Errorf("LabDevices after a refused registration = %+v, %v; want rack1's node1 and node2", devs, err)
	}
	// A host that registers again without a device gives it up.
	register(t, a, "rack1", at.Add(time.Hour), "node1")
	register(t, b, "rack2", at.Add(time.Hour), "node2", "node3")
	devs, _ = b.LabDevices(ctx)
	if got := fmt.Sprint(devs); got != "[{node1 rack1 simlab-qemu [rack-rack1]} {node2 rack2 simlab-qemu [rack-rack2]} {node3 rack2 simlab-qemu [rack-rack2]}]" {
		t.Errorf("LabDevices = %s", got)
	}
}

// A second daemon with a host's name (started at another time) is refused
// while the first holds the lease, and nothing of it is written; once the
// lease has run out it takes the name over, and the first can no longer
// renew.
func testHostsNameTaken(t *testing.T, open func() (store.Store, error)) {
	ctx := context.Background()
	first := hostStore(t, open, "rack1")
	second := hostStore(t, open, "rack1")
	register(t, first, "rack1", at.Add(time.Minute), "node1")
	later := at.Add(time.Second)
	err := second.RegisterHost(ctx, later, store.Host{Name: "rack1", API: "https://other:8470", Started: later, LeaseUntil: later.Add(time.Minute)},
		[]store.LabDevice{{Name: "node9", DeviceType: "x"}})
	var taken *store.HostNameTakenError
	if !errors.As(err, &taken) || !errors.Is(err, store.ErrHostNameTaken) || taken.Host.API != "https://rack1:8470" || !taken.Host.Started.Equal(at) ||
		!strings.Contains(err.Error(), "host rack1 is served by a labctl serve started at "+at.Format(time.RFC3339Nano)) {
		t.Fatalf("RegisterHost of a live host's name by another daemon = %v, want a HostNameTakenError naming the first", err)
	}
	if hosts, err := first.Hosts(ctx); err != nil || len(hosts) != 1 || hosts[0].API != "https://rack1:8470" || !hosts[0].LeaseUntil.Equal(at.Add(time.Minute)) {
		t.Errorf("Hosts after the refusal = %+v, %v; want the first daemon's row", hosts, err)
	}
	if devs, err := first.LabDevices(ctx); err != nil || len(devs) != 1 || devs[0].Name != "node1" {
		t.Errorf("LabDevices after the refusal = %+v, %v; want node1 only", devs, err)
	}
	if err := first.RenewLease(ctx, later, later.Add(time.Minute)); err != nil {
		t.Errorf("RenewLease by the first daemon = %v", err)
	}
	// The first stops renewing (killed): once its lease has run out the
	// second takes the name, and the first cannot renew any more.
	gone := later.Add(2 * time.Minute)
	if err := second.RegisterHost(ctx, gone, store.Host{Name: "rack1", API: "https://other:8470", Started: later, LeaseUntil: gone.Add(time.Minute)},
		[]store.LabDevice{{Name: "node1", DeviceType: "x"}}); err != nil {
		t.Fatalf("RegisterHost after the lease ran out = %v", err)
	}
	if err := first.RenewLease(ctx, gone, gone.Add(time.Minute)); !errors.Is(err, store.ErrHostNameTaken) || !strings.Contains(err.Error(), "API https://other:8470") {
		t.Errorf("RenewLease by the replaced daemon = %v, want ErrHostNameTaken naming the second", err)
	}
	if err := second.RenewLease(ctx, gone, gone.Add(time.Hour)); err != nil {
		t.Errorf("RenewLease by the second daemon = %v", err)
	}
}

// A claim is a host's: it needs the host's lease, and only that host may
// finish the job.
func testHostsClaim(t *testing.T, open func() (store.Store, error)) {
	ctx := context.Background()
	a := hostStore(t, open, "rack1")
	b := hostStore(t, open, "rack2")
	now := time.Now()
	register(t, a, "rack1", now.Add(time.Hour), "node1")
	register(t, b, "rack2", now.Add(-time.Second), "node2")
	j := create(t, a, sample("j"))
	if err := b.ClaimJob(ctx, j.ID, "node2", now); !errors.Is(err, store.ErrLeaseExpired) {
		t.Errorf("ClaimJob by a host whose lease ran out = %v, want ErrLeaseExpired", err)
	}
	if got := get(t, a, j.ID); got.State != store.Queued {
		t.Fatalf("a refused claim left the job %s", got.State)
	}
	if err := a.ClaimJob(ctx, j.ID, "node1", now); err != nil {
		t.Fatalf("ClaimJob = %v", err)
	}
	if got := get(t, b, j.ID); got.Host != "rack1" || got.RunDevice != "node1" {
		t.Errorf("claimed job: host %q device %q, want rack1 node1", got.Host, got.RunDevice)
	}
	other := create(t, a, sample("queued"))
	for _, tt := range []struct {
		host string
		want []int64
	}{{"rack1", []int64{j.ID}}, {"rack2", nil}} {
		f := store.JobFilter{States: []string{store.Running}, Host: tt.host}
		if got, err := b.JobIDs(ctx, f); err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("JobIDs(running under %s) = %v, %v; want %v (job %d queued)", tt.host, got, err, tt.want, other.ID)
		}
	}
	err := b.FinishJob(ctx, j.ID, store.Running, store.Finish{Outcome: "complete", At: now})
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "rack1") {
		t.Errorf("FinishJob by another host = %v, want ErrConflict naming rack1", err)
	}
	if err := a.FinishJob(ctx, j.ID, store.Running, store.Finish{Outcome: "complete", At: now}); err != nil {
		t.Errorf("FinishJob by the claiming host = %v", err)
	}
}

// A job created claimed by a host is stored under its claim while its
// lease holds, and queued, claimed by no one, when it does not (as
// ClaimFirst refuses); the claimed job is that host's as any it claimed
// (another host cannot end it until the lease runs out, then it ends it
// lost).
func testHostsCreateClaimed(t *testing.T, open func() (store.Store, error)) {
	ctx := context.Background()
	a := hostStore(t, open, "rack1")
	b := hostStore(t, open, "rack2")
	c := hostStore(t, open, "rack3") // never registered
	now := time.Now()
	register(t, a, "rack1", now.Add(time.Hour), "node1")
	register(t, b, "rack2", now.Add(-time.Second), "node2")
	claimed := func(s store.Store, dev string) store.Job {
		j := sample("on-" + dev)
		j.RunDevice, j.Started = dev, now
		return create(t, s, j)
	}
	j := claimed(a, "node1")
	if j.State != store.Running || j.Host != "rack1" || j.RunDevice != "node1" {
		t.Fatalf("CreateJob claimed by a host whose lease holds = %s host %q on %q; want running under rack1 on node1", j.State, j.Host, j.RunDevice)
	}
	if err := same(get(t, b, j.ID), j); err != nil || get(t, b, j.ID).Host != "rack1" {
		t.Errorf("Job(%d) differs from what CreateJob returned: %v", j.ID, err)
	}
	for _, s := range []store.Store{b, c} {
		q := claimed(s, "node2")
		g := get(t, a, q.ID)
		if q.State != store.Queued || q.RunDevice != "" || !q.Started.IsZero() || q.Host != "" ||
			g.State != store.Queued || g.RunDevice != "" || !g.Started.IsZero() || g.Host != "" {
			t.Errorf("CreateJob claimed by a host without a lease = %s on %q host %q, stored %s on %q host %q; want queued, claimed by none",
				q.State, q.RunDevice, q.Host, g.State, g.RunDevice, g.Host)
		}
		if err := a.ClaimJob(ctx, q.ID, "node1", now); err != nil {
			t.Errorf("ClaimJob of the job stored queued = %v", err)
		}
	}
	if err := b.FinishJob(ctx, j.ID, store.Running, store.Finish{Outcome: "complete", At: now}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("FinishJob by another host = %v, want ErrConflict", err)
	}
	register(t, a, "rack1", now.Add(-time.Millisecond), "node1")
	register(t, b, "rack2", now.Add(time.Hour), "node2")
	ended, err := b.EndLostJobs(ctx, now)
	if err != nil || !slices.ContainsFunc(ended, func(e store.Job) bool { return e.ID == j.ID }) {
		t.Errorf("EndLostJobs after rack1's lease ran out = %v, %v; want job %d among them", ended, err, j.ID)
	}
}

// A host whose lease ran out is lost: the other hosts, racing, end each
// of its running jobs exactly once; its own later writes are refused; it
// learns it lost them when it renews, and takes the cleanups once.
func testHostsLost(t *testing.T, open func() (store.Store, error)) {
	ctx := context.Background()
	lost := hostStore(t, open, "rack1")
	now := time.Now()
	register(t, lost, "rack1", now.Add(time.Hour), "node1")
	var ids []int64
	for i := range 12 {
		j := create(t, lost, sample(fmt.Sprint("j", i)))
		if err := lost.ClaimJob(ctx, j.ID, "node1", now); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	queued := create(t, lost, sample("queued"))
	var reapers []store.Hosts
	for i := range 3 {
		r := hostStore(t, open, fmt.Sprint("rack", i+2))
		register(t, r, fmt.Sprint("rack", i+2), now.Add(time.Hour))
		reapers = append(reapers, r)
	}
	if ended, err := reapers[0].EndLostJobs(ctx, now); err != nil || len(ended) != 0 {
		t.Fatalf("EndLostJobs while rack1's lease holds = %d jobs, %v; want none", len(ended), err)
	}
	// The lease runs out.
	register(t, lost, "rack1", now.Add(-time.Millisecond), "node1")
	var mu sync.Mutex
	endedBy := map[int64][]int{}
	var wg sync.WaitGroup
	for i, r := range reapers {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ended, err := r.EndLostJobs(ctx, now)
				if err != nil {
					t.Errorf("EndLostJobs = %v", err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, j := range ended {
					endedBy[j.ID] = append(endedBy[j.ID], i)
					if j.State != store.Finished || j.Outcome != "incomplete" || j.Reason != "host rack1 lost: its lease ran out while the job ran" || j.Host != "rack1" {
						t.Errorf("ended job %d = %s %s %q host %q", j.ID, j.State, j.Outcome, j.Reason, j.Host)
					}
				}
			}()
		}
	}
	wg.Wait()
	for _, id := range ids {
		if len(endedBy[id]) != 1 {
			t.Errorf("job %d ended by %v, want exactly once", id, endedBy[id])
		}
	}
	if len(endedBy) != len(ids) {
		t.Errorf("%d jobs ended, want %d (the queued job stays queued)", len(endedBy), len(ids))
	}
	if got := get(t, lost, queued.ID); got.State != store.Queued {
		t.Errorf("a queued job of the lab is %s after a host was lost", got.State)
	}
	if err := lost.FinishJob(ctx, ids[0], store.Running, store.Finish{Outcome: "complete", At: now}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("FinishJob under a lost claim = %v, want ErrConflict", err)
	}
	if err := lost.RenewLease(ctx, now, now.Add(time.Minute)); !errors.Is(err, store.ErrLeaseExpired) {
		t.Errorf("RenewLease after its jobs were ended = %v, want ErrLeaseExpired", err)
	}
	if err := lost.ClaimJob(ctx, queued.ID, "node1", now); !errors.Is(err, store.ErrLeaseExpired) {
		t.Errorf("ClaimJob by the lost host = %v, want ErrLeaseExpired", err)
	}
	// It comes back: registers, takes its cleanups (once), renews.
	register(t, lost, "rack1", now.Add(time.Hour), "node1")
	clean, err := lost.TakeCleanups(ctx)
	if err != nil || len(clean) != len(ids) || clean[0].ID != ids[0] || clean[0].RunDevice != "node1" {
		t.Errorf("TakeCleanups = %d jobs, %v; want %d", len(clean), err, len(ids))
	}
	if again, err := lost.TakeCleanups(ctx); err != nil || len(again) != 0 {
		t.Errorf("second TakeCleanups = %d jobs, %v; want none", len(again), err)
	}
	if err := lost.RenewLease(ctx, now, now.Add(time.Hour)); err != nil {
		t.Errorf("RenewLease after registering again = %v", err)
	}
	if err := lost.ClaimJob(ctx, queued.ID, "node1", now); err != nil {
		t.Errorf("ClaimJob after coming back = %v", err)
	}
}

// raceLab is three hosts (rack0-2, leases an hour long from now), 30
// queued jobs submitted through each host in turn, and three claimers
// (workers) per host, named HOST/DEVICE.
func raceLab(t *testing.T, open func() (store.Store, error), now time.Time) ([]hostsStore, []int64, []Claimer) {
	t.Helper()
	var hosts []hostsStore
	for i := range 3 {
		h := hostStore(t, open, fmt.Sprint("rack", i))
		register(t, h, fmt.Sprint("rack", i), now.Add(time.Hour), fmt.Sprint("node", i))
		hosts = append(hosts, h)
	}
	var jobs []int64
	for i := range 30 {
		jobs = append(jobs, create(t, hosts[i%3], sample(fmt.Sprint("j", i))).ID)
	}
	var claimers []Claimer
	for h, s := range hosts {
		for w := range 3 {
			dev := fmt.Sprintf("node%d-%d", h, w)
			claimers = append(claimers, Claimer{Store: s, Device: dev, Name: fmt.Sprintf("rack%d/%s", h, dev)})
		}
	}
	return hosts, jobs, claimers
}

// checkRunsAsWon checks that each job won in a race runs under the
// winner's host claim, on its device.
func checkRunsAsWon(t *testing.T, s store.Store, won map[int64]string) {
	t.Helper()
	for id, w := range won {
		got := get(t, s, id)
		if want := got.Host + "/" + got.RunDevice; want != w {
			t.Errorf("job %d runs as %s, but %s won the claim", id, want, w)
		}
	}
}

// Hosts race for the same jobs, several workers each: each job runs
// under exactly one host's claim, on that host's device.
func testHostsClaimRace(t *testing.T, open func() (store.Store, error)) {
	now := time.Now()
	hosts, jobs, claimers := raceLab(t, open, now)
	checkRunsAsWon(t, hosts[0], RaceClaims(t, claimers, jobs, now))
}

// Hosts claim from the same list of jobs at once, as hosts that all
// hold the lab's queue do: each job runs under exactly one host's
// claim, and a host that lost a job takes the next one free.
func testHostsClaimFirstRace(t *testing.T, open func() (store.Store, error)) {
	now := time.Now()
	hosts, jobs, claimers := raceLab(t, open, now)
	checkRunsAsWon(t, hosts[0], RaceClaimFirst(t, claimers, jobs, now))
}

// A host's retention removes the jobs it ran and those that never ran,
// not the jobs other hosts ran (their directories are on those hosts).
func testHostsRetention(t *testing.T, open func() (store.Store, error)) {
	ctx := context.Background()
	now := time.Now()
	a := hostStore(t, open, "rack1")
	b := hostStore(t, open, "rack2")
	register(t, a, "rack1", now.Add(time.Hour), "n1")
	register(t, b, "rack2", now.Add(time.Hour), "n2")
	ranA := create(t, a, sample("a"))
	ranB := create(t, a, sample("b"))
	never := create(t, a, sample("never"))
	if err := a.ClaimJob(ctx, ranA.ID, "n1", now); err != nil {
		t.Fatal(err)
	}
	if err := b.ClaimJob(ctx, ranB.ID, "n2", now); err != nil {
		t.Fatal(err)
	}
	a.FinishJob(ctx, ranA.ID, store.Running, store.Finish{Outcome: "complete", At: now})
	b.FinishJob(ctx, ranB.ID, store.Running, store.Finish{Outcome: "complete", At: now})
	a.FinishJob(ctx, never.ID, store.Queued, store.Finish{Outcome: "canceled", At: now})
	got, err := a.DeleteFinishedJobs(ctx, now.Add(time.Minute), 0, 0)
	if err != nil || len(got) != 2 || got[0] != ranA.ID || got[1] != never.ID {
		t.Errorf("rack1's DeleteFinishedJobs = %v, %v; want %d and %d (not rack2's %d)", got, err, ranA.ID, never.ID, ranB.ID)
	}
	if got, err := b.DeleteFinishedJobs(ctx, now.Add(time.Minute), 0, 0); err != nil || len(got) != 1 || got[0] != ranB.ID {
		t.Errorf("rack2's DeleteFinishedJobs = %v, %v; want %d", got, err, ranB.ID)
	}
}

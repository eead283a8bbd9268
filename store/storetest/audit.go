package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/labctl/labctl/store"
)

// The audit trail keeps every entry as added (times to the nanosecond),
// lists them oldest first by device, token and time, the newest Limit of
// them, and keeps them across a reopening.
func testAudit(t *testing.T, open func() (store.Store, error)) {
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if got, err := s.Audit(ctx, store.AuditFilter{}); err != nil || len(got) != 0 {
		t.Fatalf("Audit on an empty store = %+v, %v", got, err)
	}
	add := []store.AuditEntry{
		{At: at, Who: "alice", Role: "operator", Remote: "192.0.2.7:50123", Action: "power", Device: "node1", Detail: "off", Result: "ok"},
		{At: at.Add(time.Second), Who: "ci", Role: "submitter", Remote: "[2001:db8::1]:4000", Action: "submit", Device: "node2", Job: 42, Detail: "smoke.toml", Result: "ok"},
		{At: at.Add(2 * time.Second), Who: "bob", Role: "viewer", Remote: "192.0.2.8:1", Action: "power", Device: "node1", Result: "refused", Error: "forbidden: ünïcode"},
		{At: at.Add(3 * time.Second), Who: "alice", Role: "operator", Action: "maintenance", Device: "node2", Detail: "fan", Result: "ok"},
	}
	var last int64
	for i, e := range add {
		id, err := s.AddAudit(ctx, e)
		if err != nil {
			t.Fatalf("AddAudit(%d) = %v", i, err)
		}
		if id <= last {
			t.Errorf("AddAudit(%d) = ID %d, not above %d", i, id, last)
		}
		add[i].ID, last = id, id
	}
	check := func(what string, f store.AuditFilter, want ...int) {
		t.Helper()
		got, err := s.Audit(ctx, f)
		if err != nil {
			t.Fatalf("Audit(%s) = %v", what, err)
		}
		if len(got) != len(want) {
			t.Fatalf("Audit(%s) = %d entries %+v, want %v", what, len(got), got, want)
		}
		for i, k := range want {
			g, w := got[i], add[k]
			if g.ID != w.ID || !g.At.Equal(w.At) || g.Who != w.Who || g.Role != w.Role || g.Remote != w.Remote ||
				g.Action != w.Action || g.Device != w.Device || g.Job != w.Job || g.Detail != w.Detail || g.Result != w.Result || g.Error != w.Error {
				t.Errorf("Audit(%s)[%d] = %+v, want %+v", what, i, g, w)
			}
		}
	}
	check("all", store.AuditFilter{}, 0, 1, 2, 3)
	check("device", store.AuditFilter{Device: "node1"}, 0, 2)
	check("who", store.AuditFilter{Who: "alice"}, 0, 3)
	check("since", store.AuditFilter{Since: at.Add(time.Second)}, 1, 2, 3)
	check("limit", store.AuditFilter{Limit: 2}, 2, 3)
	check("all of them", store.AuditFilter{Device: "node2", Who: "alice", Since: at, Limit: 5}, 3)
	check("none", store.AuditFilter{Who: "nobody"})
	check("far future", store.AuditFilter{Since: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)})

	withoutTime, err := s.AddAudit(ctx, store.AuditEntry{Who: "x", Action: "online", Result: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Audit(ctx, store.AuditFilter{Who: "x"}); err != nil || len(got) != 1 || got[0].ID != withoutTime || got[0].At.IsZero() {
		t.Errorf("an entry added without a time: %+v, %v; want one with a time", got, err)
	}

	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	s = mustOpen(t, open)
	check("after reopening", store.AuditFilter{Limit: 5, Since: at, Device: "node1"}, 0, 2)
	id, err := s.AddAudit(ctx, store.AuditEntry{At: at, Who: "y", Action: "online", Result: "ok"})
	if err != nil || id <= withoutTime {
		t.Errorf("after reopening, AddAudit = %d, %v; want an ID above %d", id, err, withoutTime)
	}
}

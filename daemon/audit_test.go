package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon/daemontest"
)

// as is a request context of token with role from addr.
func as(t *testing.T, token string, role labctl.Role, addr string) context.Context {
	return labctl.WithRemote(labctl.WithRole(labctl.WithCaller(ctx(t), token), role), addr)
}

// auditLines is the audit trail f selects, one line an entry.
func auditLines(t *testing.T, d labctl.Service, f labctl.AuditFilter) []string {
	t.Helper()
	list, err := d.Audit(ctx(t), f)
	if err != nil {
		t.Fatalf("Audit = %v", err)
	}
	var out []string
	for _, e := range list {
		if e.Time.IsZero() || e.ID == 0 {
			t.Errorf("audit entry without a time or ID: %+v", e)
		}
		line := fmt.Sprintf("%s/%s@%s %s %s", e.Who, e.Role, e.Remote, e.Action, e.Result)
		if e.Device != "" {
			line += " device=" + e.Device
		}
		if e.Job != 0 {
			line += fmt.Sprintf(" job=%d", e.Job)
		}
		if e.Detail != "" {
			line += " detail=" + e.Detail
		}
		if e.Error != "" {
			line += " error"
		}
		out = append(out, line)
	}
	return out
}

// Every action a person takes through the daemon is in the audit trail
// with the token, role and address that asked, what it was and whether
// it was allowed; reads and power status queries are not; the trail is
// filtered by device, token, time and count, and survives a restart.
func TestAuditTrail(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run})
	l.WaitDevice("node1", labctl.DeviceIdle)
	start := time.Now()
	ci := as(t, "ci", labctl.RoleSubmitter, "192.0.2.10:4000")
	bob := as(t, "bob", labctl.RoleSubmitter, "192.0.2.11:4001")
	alice := as(t, "alice", labctl.RoleOperator, "[2001:db8::1]:4002")

	job, err := l.Daemon.Submit(ci, labctl.SubmitRequest{File: "smoke.toml", Dir: "/", Spec: daemontest.JobText(t, "device = \"node1\"\n")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Daemon.Submit(ci, labctl.SubmitRequest{File: "bad.toml", Dir: "/", Spec: "name = 1\n"}); err == nil {
		t.Fatal("a bad job file was taken")
	}
	r.waitStarted(t, 1)
	if _, err := l.Daemon.Cancel(bob, job.ID); !errors.Is(err, labctl.ErrForbidden) {
		t.Fatalf("bob canceling ci's job: %v", err)
	}
	if _, err := l.Daemon.Cancel(ci, job.ID); err != nil {
		t.Fatal(err)
	}
	l.WaitDevice("node1", labctl.DeviceIdle)
	if _, err := l.Daemon.Power(alice, "node1", labctl.PowerRequest{Op: labctl.PowerStatus}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Daemon.Power(alice, "node1", labctl.PowerRequest{Op: string(labctl.PowerOff)}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Daemon.Power(alice, "node9", labctl.PowerRequest{Op: string(labctl.PowerOn), Force: true}); !errors.Is(err, labctl.ErrNotFound) {
		t.Fatalf("power on node9: %v", err)
	}
	if _, err := l.Daemon.SetBootDevice(alice, "node1", labctl.BootdevRequest{Device: labctl.BootPXE}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Daemon.Maintenance(alice, "node1", "fan"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Daemon.Online(alice, "node1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Daemon.CheckHealth(alice, "node1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Daemon.Devices(alice); err != nil {
		t.Fatal(err)
	}

	want := []string{
		"ci/submitter@192.0.2.10:4000 submit ok device=node1 job=1 detail=smoke.toml",
		"ci/submitter@192.0.2.10:4000 submit failed detail=bad.toml error",
		"bob/submitter@192.0.2.11:4001 cancel refused job=1 error",
		"ci/submitter@192.0.2.10:4000 cancel ok device=node1 job=1",
		"alice/operator@[2001:db8::1]:4002 power ok device=node1 detail=off",
		"alice/operator@[2001:db8::1]:4002 power failed device=node9 detail=on (force) error",
		"alice/operator@[2001:db8::1]:4002 bootdev ok device=node1 detail=pxe",
		"alice/operator@[2001:db8::1]:4002 maintenance ok device=node1 detail=fan",
		"alice/operator@[2001:db8::1]:4002 online ok device=node1",
		"alice/operator@[2001:db8::1]:4002 health ok device=node1 detail=check passed",
	}
	if got := auditLines(t, l.Daemon, labctl.AuditFilter{}); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit trail:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := auditLines(t, l.Daemon, labctl.AuditFilter{Who: "ci", Device: "node1"}); len(got) != 2 || got[0] != want[0] || got[1] != want[3] {
		t.Errorf("ci's entries about node1: %q", got)
	}
	if got := auditLines(t, l.Daemon, labctl.AuditFilter{Limit: 2}); len(got) != 2 || got[1] != want[len(want)-1] {
		t.Errorf("the newest 2 entries: %q", got)
	}
	if got := auditLines(t, l.Daemon, labctl.AuditFilter{Since: time.Now().Add(time.Hour)}); len(got) != 0 {
		t.Errorf("entries from the future: %q", got)
	}
	if got := auditLines(t, l.Daemon, labctl.AuditFilter{Since: start}); len(got) != len(want) {
		t.Errorf("entries since the start: %d, want %d", len(got), len(want))
	}

	// Console write: taken when free, then forced; a read-only viewer
	// takes nothing.
	carol := as(t, "carol", labctl.RoleOperator, "192.0.2.12:4003")
	dave := as(t, "dave", labctl.RoleAdmin, "192.0.2.13:4004")
	erin := as(t, "erin", labctl.RoleViewer, "192.0.2.14:4005")
	for _, a := range []struct {
		ctx context.Context
		o   labctl.ConsoleOptions
	}{
		{carol, labctl.ConsoleOptions{}},
		{erin, labctl.ConsoleOptions{ReadOnly: true}},
		{dave, labctl.ConsoleOptions{Who: "dave (laptop)", Force: true}},
	} {
		v, err := l.Daemon.AttachConsole(a.ctx, "node1", a.o)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
	}
	wantConsole := []string{
		"carol/operator@192.0.2.12:4003 console-write ok device=node1 detail=as carol",
		"dave/admin@192.0.2.13:4004 console-write ok device=node1 detail=as dave (laptop), forced from carol",
	}
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = auditLines(t, l.Daemon, labctl.AuditFilter{Since: start})[len(want):]; len(got) >= len(wantConsole) {
			break
		}
	}
	if strings.Join(got, "\n") != strings.Join(wantConsole, "\n") {
		t.Errorf("console entries:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantConsole, "\n"))
	}

	l.Restart()
	if got := auditLines(t, l.Daemon, labctl.AuditFilter{Limit: 1000}); len(got) != len(want)+len(wantConsole) {
		t.Errorf("after a restart, %d entries, want %d", len(got), len(want)+len(wantConsole))
	}
}

// A refusal package api records through RecordRefused names the caller.
func TestAuditRecordRefused(t *testing.T) {
	t.Parallel()
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: instantRun})
	l.Daemon.RecordRefused(as(t, "erin", labctl.RoleViewer, "192.0.2.14:4005"),
		labctl.AuditEntry{Action: labctl.AuditPower, Device: "node1", Error: "forbidden: needs role operator"})
	got := auditLines(t, l.Daemon, labctl.AuditFilter{})
	if want := "erin/viewer@192.0.2.14:4005 power refused device=node1 error"; len(got) != 1 || got[0] != want {
		t.Errorf("audit trail %q, want %q", got, want)
	}
}

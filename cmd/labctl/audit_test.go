package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
	"github.com/labctl/labctl/daemon/daemontest"
)

// labctl audit lists, through the daemon's API, what tokens did and
// tried: an operator's power-off, a viewer's refused one, with their
// roles and addresses; only an operator may read the trail; -o json and
// the filters work; a wrong command line is a usage error.
func TestAudit(t *testing.T) {
	t.Parallel()
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true})
	l.WaitIdle()
	tokens := map[labctl.Role]string{}
	var list []api.Token
	for _, r := range labctl.Roles {
		tokens[r] = "audit-test-token-" + string(r)
		list = append(list, api.Token{Name: string(r) + "-token", Secret: tokens[r], Role: r})
	}
	srv, err := api.NewServer(l.Daemon, api.Config{Addr: "127.0.0.1:0", Tokens: list})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	url := "http://" + srv.Addr().String()
	vars := func(r labctl.Role) map[string]string {
		return map[string]string{"LABCTL_SERVER": url, "LABCTL_TOKEN": tokens[r]}
	}

	if code, _, _ := runLabctl(t, vars(labctl.RoleOperator), "power", "node1", "off"); code != 0 {
		t.Fatalf("operator power off: exit %d", code)
	}
	if code, _, stderr := runLabctl(t, vars(labctl.RoleViewer), "power", "node1", "off"); code != 1 || !strings.Contains(stderr, "needs role operator") {
		t.Errorf("viewer power off: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runLabctl(t, vars(labctl.RoleSubmitter), "audit"); code != 1 || !strings.Contains(stderr, "needs role operator") {
		t.Errorf("labctl audit as a submitter: exit %d, %q", code, stderr)
	}

	code, out, _ := runLabctl(t, vars(labctl.RoleOperator), "audit", "-o", "json")
	var entries []labctl.AuditEntry
	if err := json.Unmarshal([]byte(out), &entries); code != 0 || err != nil {
		t.Fatalf("labctl audit -o json: exit %d, %v", code, err)
	}
	type seen struct {
		who    string
		role   labctl.Role
		action string
		result string
	}
	var got []seen
	for _, e := range entries {
		if e.Device != "node1" || !strings.HasPrefix(e.Remote, "127.0.0.1:") || e.Time.IsZero() {
			t.Errorf("entry %+v: want node1, an address and a time", e)
		}
		got = append(got, seen{e.Who, e.Role, e.Action, e.Result})
	}
	want := []seen{
		{"operator-token", labctl.RoleOperator, labctl.AuditPower, labctl.AuditOK},
		{"viewer-token", labctl.RoleViewer, labctl.AuditPower, labctl.AuditRefused},
		{"submitter-token", labctl.RoleSubmitter, labctl.AuditPower, labctl.AuditRefused},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("audit entries %+v, want %+v", got, want[:2])
	}
	if len(entries) > 0 && entries[0].Detail != "off" {
		t.Errorf("the power-off's detail is %q", entries[0].Detail)
	}

	code, out, _ = runLabctl(t, vars(labctl.RoleAdmin), "audit", "--who", "viewer-token", "--device", "node1", "--since", "1h", "--limit", "5")
	if code != 0 || !strings.Contains(out, "TIME") || !strings.Contains(out, "viewer-token") || !strings.Contains(out, "refused: forbidden") ||
		strings.Contains(out, "operator-token") {
		t.Errorf("labctl audit --who viewer-token: exit %d\n%s", code, out)
	}
	if code, out, _ = runLabctl(t, vars(labctl.RoleAdmin), "audit", "--since", "2999-01-01"); code != 0 || strings.Count(out, "\n") != 1 {
		t.Errorf("labctl audit --since the future: exit %d\n%s", code, out)
	}

	for _, args := range [][]string{
		{"audit", "node1"},
		{"audit", "--since", "yesterday"},
		{"audit", "--limit", "0"},
		{"audit", "-o", "yaml"},
	} {
		if code, _, _ := runLabctl(t, vars(labctl.RoleAdmin), args...); code != exitUsage {
			t.Errorf("labctl %s: exit %d, want %d", strings.Join(args, " "), code, exitUsage)
		}
	}
}

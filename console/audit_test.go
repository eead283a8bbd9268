package console_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/console"
)

// writeLog records Config.WriteTaken calls.
type writeLog struct {
	mu    sync.Mutex
	taken []string
}

func (w *writeLog) record(ctx context.Context, node, who, from string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.taken = append(w.taken, fmt.Sprintf("%s %s/%s@%s %q from %q", node, labctl.CallerFrom(ctx), labctl.RoleFrom(ctx), labctl.RemoteFrom(ctx), who, from))
}

func (w *writeLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.taken, "\n")
}

// The broker says who took write on a console, with the token, role and
// address they attached with, and whom it was forced from; a viewer who
// does not get write is not reported. A power cycle at the console
// carries the viewer's role and address too.
func TestBrokerWriteTaken(t *testing.T) {
	t.Parallel()
	c := fakeConsole(t)
	taken := &writeLog{}
	power := &identPower{}
	b := newBroker(t, console.Config{WriteTaken: taken.record, Power: power}, c)
	as := func(token string, role labctl.Role, remote string) context.Context {
		return labctl.WithRemote(labctl.WithRole(labctl.WithCaller(context.Background(), token), role), remote)
	}
	attachAs := func(ctx context.Context, o labctl.ConsoleOptions) *viewerLog {
		v, err := b.AttachConsole(ctx, "node1", o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		l := &viewerLog{t: t, who: o.Who, v: v, done: make(chan struct{})}
		go l.read(context.Background())
		return l
	}
	alice := attachAs(as("alice", labctl.RoleOperator, "192.0.2.1:1000"), labctl.ConsoleOptions{Who: "alice (laptop)"})
	alice.waitNotice("you have write")
	bob := attachAs(as("bob", labctl.RoleViewer, "192.0.2.2:2000"), labctl.ConsoleOptions{Who: "bob", ReadOnly: true})
	bob.waitNotice("read-only: attached to watch")
	carol := attachAs(as("carol", labctl.RoleAdmin, "192.0.2.3:3000"), labctl.ConsoleOptions{Who: "carol", Force: true})
	carol.waitNotice("you have write")
	carol.v.PowerCycle()
	carol.waitNotice("power cycle of node1 done")
	want := `node1 alice/operator@192.0.2.1:1000 "alice (laptop)" from ""
node1 carol/admin@192.0.2.3:3000 "carol" from "alice (laptop)"`
	if got := taken.String(); got != want {
		t.Errorf("WriteTaken calls:\n%s\nwant\n%s", got, want)
	}
	if got := power.String(); got != "carol (console)/admin@192.0.2.3:3000" {
		t.Errorf("power cycle by %q, want carol's with her role and address", got)
	}
}

// identPower records who asked for power operations, with role and
// address.
type identPower struct {
	fakePower
	mu  sync.Mutex
	who []string
}

func (p *identPower) Power(ctx context.Context, name string, req labctl.PowerRequest) (labctl.PowerResponse, error) {
	p.mu.Lock()
	p.who = append(p.who, fmt.Sprintf("%s/%s@%s", labctl.CallerFrom(ctx), labctl.RoleFrom(ctx), labctl.RemoteFrom(ctx)))
	p.mu.Unlock()
	return p.fakePower.Power(ctx, name, req)
}

func (p *identPower) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.who, "|")
}

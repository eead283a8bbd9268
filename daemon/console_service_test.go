package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon/daemontest"
)

// The daemon's consoles are its devices'; ~R at one is a power cycle by
// the person through the daemon's Power; during a job it is refused.
func TestConsoleThroughDaemon(t *testing.T) {
	t.Parallel()
	r := newFakeRunner()
	l := daemontest.Start(t, daemontest.Options{Nodes: 1, Fake: true, Run: r.run})
	l.WaitDevice("node1", labctl.DeviceIdle)
	if _, err := l.Daemon.AttachConsole(ctx(t), "node9", labctl.ConsoleOptions{}); !errors.Is(err, labctl.ErrNotFound) {
		t.Errorf("AttachConsole to an unknown device: %v", err)
	}
	v, err := l.Daemon.AttachConsole(labctl.WithCaller(ctx(t), "alice-token"), "node1", labctl.ConsoleOptions{Who: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	notices := make(chan string, 100)
	go func() {
		for {
			m, err := v.Next(context.Background())
			if err != nil {
				close(notices)
				return
			}
			if m.Notice != nil {
				notices <- m.Notice.Text
			}
		}
	}()
	waitNotice := func(s string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case n := <-notices:
				if strings.Contains(n, s) {
					return
				}
			case <-timeout:
				t.Fatalf("no notice %q", s)
			}
		}
	}
	waitNotice("you have write")
	v.PowerCycle()
	waitNotice("power cycle of node1 done")
	if calls := l.Fakes["node1"].Calls(); !slices.Contains(calls, "power cycle") {
		t.Errorf("node calls %q, want a power cycle", calls)
	}
	list, err := l.Daemon.Consoles(ctx(t))
	if err != nil || len(list) != 1 || len(list[0].Viewers) != 1 || list[0].Viewers[0].Token != "alice-token" {
		t.Errorf("Consoles = %+v, %v", list, err)
	}

	job := l.Submit(daemontest.JobText(t, "device = \"node1\"\n"))
	r.waitStarted(t, 1)
	waitNotice(fmt.Sprintf("job %d started", job.ID))
	v.PowerCycle()
	waitNotice(fmt.Sprintf("no power cycle: read-only: job %d is the writer", job.ID))
	r.release <- "complete"
	l.Wait(job.ID)
}

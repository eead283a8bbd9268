package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon/daemontest"
)

// A health check with health.master_boot boots the master image to its
// prompt as a job's deploy does, and puts the node back (off, PXE entry
// local) whether the boot worked or not; the health log holds the steps
// and the console.
func TestHealthMasterBoot(t *testing.T) {
	t.Parallel()
	l := daemontest.Start(t, daemontest.Options{Nodes: 1})
	l.WaitDevice("node1", labctl.DeviceIdle)
	l.Shutdown()
	l.Config.Devices[0].Settings.Health.MasterBoot = true
	l.Start()
	node := l.Sims["node1"]
	healthLog := filepath.Join(l.Config.StateDir, "devices", "node1", "health.log")

	dev := l.WaitDevice("node1", labctl.DeviceIdle)
	if dev.Health == nil || !dev.Health.OK || !strings.Contains(dev.Health.Detail, "master image boots") {
		t.Fatalf("start-up check: %+v", dev.Health)
	}
	log, _ := os.ReadFile(healthLog)
	if !strings.Contains(string(log), "master prompt") || !strings.Contains(string(log), "Linux version") {
		t.Errorf("health log lacks the master boot:\n%s", log)
	}
	if calls := node.Calls(); node.On() || calls[len(calls)-1] != "pxe local" {
		t.Errorf("node after the check: on %v, calls %v", node.On(), calls)
	}

	node.BreakMaster()
	dev, err := l.Daemon.CheckHealth(daemontest.Context(t), "node1")
	if err != nil || dev.Health == nil || dev.Health.OK || !strings.Contains(dev.Health.Detail, "No bootable device") {
		t.Fatalf("check with the master broken: %+v, %v", dev.Health, err)
	}
	if dev.State != labctl.DeviceOffline {
		t.Errorf("device with the master broken is %s", dev.State)
	}
	if calls := node.Calls(); node.On() || calls[len(calls)-1] != "pxe local" {
		t.Errorf("node after the failed check: on %v, calls %v", node.On(), calls)
	}
}

// Package dispatcher runs jobs on lab nodes: the pipeline that deploys an
// image through the PXE-booted master, boots the node from its disk, runs
// the test steps over the serial console and always powers the node off
// and puts its boot entry back at the end.
//
// It drives a node through what the node offers (labctl.Power,
// labctl.Netboot) and its console session; package lab provides the real
// implementations (IPMI, commands, the boot server) and dispatchertest a
// simulated node for tests.
package dispatcher

import (
	"time"
)

// Progress receives what a running job is doing, for a live view such as a
// progress bar. Implementations must be fast and safe for concurrent use.
type Progress interface {
	// Phase is called when the job enters a phase (deploy, boot, test, finalize).
	Phase(name string)
	// Transfer is called about once a second while the image streams to
	// the node; total is 0 when the size is unknown.
	Transfer(done, total int64, elapsed time.Duration)
}

type noProgress struct{}

func (noProgress) Phase(string)                         {}
func (noProgress) Transfer(int64, int64, time.Duration) {}

package jobs

import (
	"time"

	"github.com/labctl/labctl/devices"
)

// Timeouts are a job's time limits on one device: the ones the job sets,
// and the device type's defaults for those it leaves out (zero).
type Timeouts struct {
	Job    time.Duration // the whole job
	Deploy time.Duration // the deploy action
	// Boot is power cycle to the test OS's shell prompt; its default is
	// the device type's disk_boot plus login.
	Boot  time.Duration
	Tests []time.Duration // each test step, in the job's order
	Save  time.Duration   // the save action; its default is the device type's deploy
}

// Timeouts resolves the job's timeouts against the defaults of the device
// it runs on.
func (j *Job) Timeouts(defaults devices.Timeouts) Timeouts {
	or := func(d, def time.Duration) time.Duration {
		if d > 0 {
			return d
		}
		return def
	}
	t := Timeouts{
		Job:    or(j.Timeout, defaults.Job),
		Deploy: or(j.Deploy.Timeout, defaults.Deploy),
		Boot:   or(j.Boot.Timeout, defaults.DiskBoot+defaults.Login),
		Tests:  make([]time.Duration, len(j.Tests)),
	}
	if j.Save != nil {
		t.Save = or(j.Save.Timeout, defaults.Deploy)
	}
	for i, test := range j.Tests {
		t.Tests[i] = or(test.Timeout, defaults.TestStep)
	}
	return t
}

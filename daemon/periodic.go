package daemon

import (
	"fmt"
	"strings"
	"time"

	"github.com/labctl/labctl"
)

// recordHealthLocked takes in a health check's result and returns why the
// device is idle after it. A pass puts the device in service. A failure
// takes a device that was in service offline once it has failed the
// lab's [health] failures checks in a row (default 1: at once); before
// that it stays in service, and the reason says so. A device that was not
// in service (offline, checked at start-up or after a job the lab cut
// short) stays out.
func (d *Daemon) recordHealthLocked(dev *device, h labctl.Health) string {
	dev.health = &h
	if len(dev.healthHistory) == healthHistory {
		dev.healthHistory = append(dev.healthHistory[:0], dev.healthHistory[1:]...)
	}
	dev.healthHistory = append(dev.healthHistory, h)
	if h.OK {
		dev.healthy, dev.recover, dev.failures = true, false, 0
		return "health check passed"
	}
	dev.failures++
	allowed := max(d.cfg.Lab.Health.Failures, 1)
	if dev.healthy && !dev.recover && dev.failures < allowed {
		return fmt.Sprintf("health check failed (%d in a row; offline after %d): %s", dev.failures, allowed, h.Detail)
	}
	dev.healthy = false
	dev.healthReason = "health check failed: " + h.Detail
	if dev.failures > 1 {
		dev.healthReason = fmt.Sprintf("health check failed %d times in a row: %s", dev.failures, h.Detail)
	}
	return ""
}

// periodicChecksLocked starts the health check of every device that has
// been idle or offline for the lab's [health] interval, and returns when
// the next one is due (zero: none). It never checks a device that runs a
// job or a check, that a person is using (power, bootdev), that is
// reserved or in maintenance: such a device is looked at again when it
// changes. Offline devices are checked too, so that they come back by
// themselves once they pass.
func (d *Daemon) periodicChecksLocked(now time.Time) time.Time {
	every := d.cfg.Lab.Health.Interval
	if every <= 0 || !d.serving || d.stopping {
		return time.Time{}
	}
	var next time.Time
	for _, name := range d.names {
		dev := d.devices[name]
		if dev.busy || dev.job != nil || dev.check != nil || dev.manual > 0 || dev.maintenance ||
			dev.nodeErr != nil || dev.reservation != nil ||
			(dev.state != labctl.DeviceIdle && dev.state != labctl.DeviceOffline) {
			continue
		}
		due := dev.since.Add(every)
		if !due.After(now) {
			d.requestCheckLocked(dev, fmt.Sprintf("periodic: %s %s", dev.state, roundDuration(now.Sub(dev.since))))
			continue
		}
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	return next
}

// roundDuration prints a duration as a person would say it: "2h",
// "1h30m", "45s", "250ms".
func roundDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
	}
	return s
}

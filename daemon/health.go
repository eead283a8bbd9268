package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/internal/statedir"
)

// healthCheck checks that the device can run a job, as its device type's
// [health] says: the BMC answers and the power state reads (always), the
// console opens (health.console), the master image boots to its prompt
// (health.master_boot). A check that follows a job cut short (c.recover)
// first puts the node back as a job's finalize does: powered off, its PXE
// entry local. The node is driven through the dispatcher's own steps. Each
// check writes its steps to STATE/devices/NAME/health.log.
func (d *Daemon) healthCheck(ctx context.Context, dev *device, c *check) labctl.Health {
	start := d.now()
	h := labctl.Health{At: start}
	hl := d.openHealthLog(dev.name)
	defer hl.Close()
	note := func(format string, args ...any) { hl.Event(fmt.Sprintf(format, args...)) }
	note("health check of %s: %s", dev.name, c.why)
	var done []string
	// fail ends the check at a step ("" when err names it).
	fail := func(step string, err error) labctl.Health {
		h.Detail = err.Error()
		if step != "" {
			h.Detail = step + ": " + h.Detail
		}
		h.Duration = d.now().Sub(start)
		note("failed after %s: %s", h.Duration.Round(time.Millisecond), h.Detail)
		return h
	}
	if dev.nodeErr != nil {
		return fail("configuration", dev.nodeErr)
	}
	n, set := dev.node, dev.cfg.Settings
	drv := &dispatcher.Driver{Settings: set, Power: n.Power, Netboot: n.Netboot, Event: hl.Event, Now: d.now}

	if c.recover {
		fctx, cancel := context.WithTimeout(ctx, set.Timeouts.Power)
		err := drv.Finalize(fctx, false)
		cancel()
		if err != nil {
			return fail("", err)
		}
		done = append(done, "powered off, PXE entry local")
	}
	pctx, cancel := context.WithTimeout(ctx, set.Timeouts.Power)
	note("read the power state")
	on, err := n.Power.PowerState(pctx)
	cancel()
	if err != nil {
		return fail("BMC", err)
	}
	done = append(done, fmt.Sprintf("BMC answers (power %s)", labctl.OnOff(on)))

	if set.Health.Console || set.Health.MasterBoot {
		note("open the console %s", n.Console.Target())
		s, release, err := d.consoles.AcquireFor(ctx, dev.name, "health check", n.Console, set.Timeouts.Power)
		if err != nil {
			release()
			return fail("console", err)
		}
		done = append(done, "console opens")
		if set.Health.MasterBoot {
			drv.Console = s
			hl.Follow(s)
			err = checkMasterBoot(ctx, drv)
			hl.StopFollowing()
		}
		release()
		if err != nil {
			return fail("master boot", err)
		}
		if set.Health.MasterBoot {
			done = append(done, "master image boots")
		}
	}
	h.OK = true
	h.Duration = d.now().Sub(start)
	h.Detail = strings.Join(done, "; ")
	note("passed in %s: %s", h.Duration.Round(time.Millisecond), h.Detail)
	return h
}

// checkMasterBoot boots the master image to its prompt as a job's deploy
// does, then puts the node back as a job's finalize does, also when the
// boot failed.
func checkMasterBoot(ctx context.Context, drv *dispatcher.Driver) error {
	err := drv.BootMaster(ctx)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drv.Settings.Timeouts.Power)
	defer cancel()
	if ferr := drv.Finalize(fctx, false); err == nil {
		err = ferr
	}
	return err
}

// openHealthLog starts the device's health log afresh; nil (no log) if the
// file cannot be created.
func (d *Daemon) openHealthLog(name string) *dispatcher.Log {
	dir := filepath.Join(d.cfg.Lab.StateDir, "devices", name)
	if err := os.MkdirAll(dir, statedir.DirMode); err != nil {
		d.log.Warn("health log", "device", name, "err", err)
		return nil
	}
	f, err := os.OpenFile(filepath.Join(dir, "health.log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, statedir.FileMode)
	if err != nil {
		d.log.Warn("health log", "device", name, "err", err)
		return nil
	}
	return dispatcher.NewLog(f, d.now, nil)
}

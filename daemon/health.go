package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/sol"
)

// healthCheck checks that the device can run a job, as its device type's
// [health] says: the BMC answers and the power state reads (always), the
// console opens (health.console), the master image boots to its prompt
// (health.master_boot). A check that follows a job cut short (c.recover)
// first puts the node back as a job's finalize would: powered off, its PXE
// entry local. Each check writes its steps to STATE/devices/NAME/health.log.
func (d *Daemon) healthCheck(ctx context.Context, dev *device, c *check) labctl.Health {
	start := d.now()
	h := labctl.Health{At: start}
	hl := d.openHealthLog(dev.name)
	defer hl.close()
	hl.note("health check of %s: %s", dev.name, c.why)
	var done []string
	fail := func(step string, err error) labctl.Health {
		h.Detail = fmt.Sprintf("%s: %v", step, err)
		h.Duration = d.now().Sub(start)
		hl.note("failed after %s: %s", h.Duration.Round(time.Millisecond), h.Detail)
		return h
	}
	if dev.nodeErr != nil {
		return fail("configuration", dev.nodeErr)
	}
	n, set := dev.node, dev.cfg.Settings
	power := func(what string, fn func(context.Context) error) error {
		pctx, cancel := context.WithTimeout(ctx, set.Timeouts.Power)
		defer cancel()
		hl.note("%s", what)
		return fn(pctx)
	}

	if c.recover {
		if err := power("power off", func(ctx context.Context) error { return n.Power.Power(ctx, labctl.PowerOff) }); err != nil {
			return fail("power off", err)
		}
		if n.Netboot != nil {
			if err := n.Netboot.BootLocal(); err != nil {
				return fail("PXE entry", err)
			}
		}
		done = append(done, "powered off, PXE entry local")
	}
	var on bool
	if err := power("read the power state", func(ctx context.Context) (err error) {
		on, err = n.Power.PowerState(ctx)
		return err
	}); err != nil {
		return fail("BMC", err)
	}
	done = append(done, fmt.Sprintf("BMC answers (power %s)", labctl.OnOff(on)))

	if set.Health.Console || set.Health.MasterBoot {
		hl.note("open the console %s", n.Console.Target())
		s, release, err := d.consoles.AcquireFor(ctx, dev.name, "health check", n.Console, set.Timeouts.Power)
		if err != nil {
			release()
			return fail("console", err)
		}
		done = append(done, "console opens")
		if set.Health.MasterBoot {
			err = d.checkMasterBoot(ctx, dev, s, hl)
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
	hl.note("passed in %s: %s", h.Duration.Round(time.Millisecond), h.Detail)
	return h
}

// checkMasterBoot PXE-boots the master image and waits for its prompt,
// as a job's deploy does, then powers the node off and sets its PXE entry
// back to local, also when the boot failed.
func (d *Daemon) checkMasterBoot(ctx context.Context, dev *device, s *sol.Session, hl *healthLog) (err error) {
	n, set := dev.node, dev.cfg.Settings
	if n.Netboot == nil {
		return errors.New("no boot server")
	}
	sub := s.Subscribe(4 << 20)
	defer sub.Close()
	go hl.follow(sub)
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), set.Timeouts.Power)
		defer cancel()
		hl.note("power off, PXE entry local")
		perr := n.Power.Power(fctx, labctl.PowerOff)
		lerr := n.Netboot.BootLocal()
		if err == nil {
			err = errors.Join(perr, lerr)
		}
	}()
	step := func(what string, fn func(context.Context) error) error {
		pctx, cancel := context.WithTimeout(ctx, set.Timeouts.Power)
		defer cancel()
		hl.note("%s", what)
		if err := fn(pctx); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	if err := step("power off", func(ctx context.Context) error { return n.Power.Power(ctx, labctl.PowerOff) }); err != nil {
		return err
	}
	if err := n.Netboot.BootMaster(); err != nil {
		return fmt.Errorf("PXE entry: %w", err)
	}
	if err := step("bootdev pxe", func(ctx context.Context) error { return n.Power.SetBootDevice(ctx, labctl.BootPXE) }); err != nil {
		return err
	}
	s.Discard()
	start := time.Now()
	if err := step("power on", func(ctx context.Context) error { return n.Power.Power(ctx, labctl.PowerOn) }); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, set.Timeouts.MasterBoot)
	defer cancel()
	prompt := regexp.MustCompile(regexp.QuoteMeta(set.Master.Prompt))
	failed := regexp.MustCompile(`Kernel panic - not syncing[^\n]*|No bootable device[^\n]*`)
	m, err := s.Expect(wctx, prompt, failed)
	if err != nil {
		return fmt.Errorf("the master prompt %q did not appear within %s: %w", set.Master.Prompt, set.Timeouts.MasterBoot, err)
	}
	if m.Pattern != 0 {
		return fmt.Errorf("waiting for the master prompt: the node printed %q", m.Text())
	}
	hl.note("master prompt after %s", time.Since(start).Round(time.Millisecond))
	return nil
}

// healthLog is a device's health check log: the steps, and the console
// during a master boot.
type healthLog struct {
	f   *os.File
	tw  *sol.TranscriptWriter
	now func() time.Time
}

func (d *Daemon) openHealthLog(name string) *healthLog {
	hl := &healthLog{now: d.now}
	dir := filepath.Join(d.cfg.Lab.StateDir, "devices", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		d.log.Warn("health log", "device", name, "err", err)
		return hl
	}
	f, err := os.Create(filepath.Join(dir, "health.log"))
	if err != nil {
		d.log.Warn("health log", "device", name, "err", err)
		return hl
	}
	hl.f, hl.tw = f, sol.NewTranscriptWriter(f, nil)
	return hl
}

func (hl *healthLog) note(format string, args ...any) {
	if hl.tw != nil {
		hl.tw.Note(hl.now(), fmt.Sprintf(format, args...))
	}
}

// follow copies console records into the log until the subscription ends.
func (hl *healthLog) follow(sub *sol.Subscription) {
	for {
		rec, err := sub.Next(context.Background())
		if err != nil {
			return
		}
		if hl.tw != nil {
			hl.tw.Add(rec)
		}
	}
}

func (hl *healthLog) close() {
	if hl.tw != nil {
		hl.tw.Close()
		hl.f.Close()
	}
}

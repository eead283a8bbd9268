package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/sol"
)

// Driver drives a node through the pipeline's steps that stand on their
// own: booting the master image to its prompt, and putting the node back
// (powered off, its PXE entry local). A job's Run takes its node through
// them; the daemon's health check runs them on their own.
type Driver struct {
	// Settings are the device's settings (prompts, timeouts).
	Settings devices.Settings
	Power    labctl.Power
	Netboot  labctl.Netboot
	// Console is the node's console session, open. The steps read it and
	// type nothing on it but the keys that skip firmware countdowns.
	Console *sol.Session
	// Keys, if set, is the console's writer that sends those keys
	// (Settings.Boot.Skip); without it the countdowns run out.
	Keys *sol.Writer
	// Event, if set, hears each step as it is taken, one line each (for a
	// job log or a health log).
	Event func(msg string)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// bootFailures are console lines that mean a boot cannot succeed: waiting
// for a prompt stops at once when one shows up.
var bootFailures = []*regexp.Regexp{
	regexp.MustCompile(`Kernel panic - not syncing[^\n]*`),
	regexp.MustCompile(`No bootable device[^\n]*`),
	// pxelinux could not load the kernel or initrd of its entry.
	regexp.MustCompile(`Loading \S+ failed: [^\n]*`),
	regexp.MustCompile(`Could not find kernel image: [^\n]*`),
	// An NFS-root initrd could not mount or start the root (simlab's
	// prints this, then powers off).
	regexp.MustCompile(`nfsroot: [^\n]* failed[^\n]*`),
}

// BootMaster powers the node on into the master image over PXE and waits
// for the master prompt: power off, PXE entry to the master, bootdev pxe,
// power on. A console line that means the boot failed ends the wait at
// once. The node is left on at the master prompt.
func (d *Driver) BootMaster(ctx context.Context) error {
	if d.Netboot == nil {
		return errors.New("no boot server")
	}
	start, err := d.pxeBoot(ctx, d.Netboot.BootMaster)
	if err != nil {
		return err
	}
	if err := d.waitPrompt(ctx, d.Settings.Timeouts.MasterBoot, "the master prompt", d.masterPrompt()); err != nil {
		return err
	}
	d.event("master prompt %s after power on", d.now().Sub(start).Round(10*time.Millisecond))
	return nil
}

// pxeBoot powers the node on into the PXE entry setEntry sets: power
// off, the entry, bootdev pxe, power on, with what the console printed
// before dropped. It returns when power on was asked for.
func (d *Driver) pxeBoot(ctx context.Context, setEntry func() error) (time.Time, error) {
	if err := d.power(ctx, labctl.PowerOff); err != nil {
		return time.Time{}, err
	}
	if err := setEntry(); err != nil {
		return time.Time{}, fmt.Errorf("PXE config: %w", err)
	}
	// Boot flags expire on many BMCs 60 s after they are set: set them
	// right before powering on.
	if err := d.bootdev(ctx, labctl.BootPXE); err != nil {
		return time.Time{}, err
	}
	d.Console.Discard()
	start := d.now()
	return start, d.power(ctx, labctl.PowerOn)
}

// masterPrompt matches the master image's shell prompt.
func (d *Driver) masterPrompt() *regexp.Regexp {
	return regexp.MustCompile(regexp.QuoteMeta(d.Settings.Master.Prompt))
}

// Finalize puts the node back as it is between jobs: powered off (unless
// keepOn) and its PXE entry back to local boot. Both are tried even if one
// fails; the first error is returned. ctx bounds it: a caller that must
// finalize after its own context ended passes one of its own.
func (d *Driver) Finalize(ctx context.Context, keepOn bool) error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	if keepOn {
		d.event("finalize: keeping the node powered on (keep_powered_on)")
	} else if d.Power != nil {
		d.event("finalize: power off")
		if err := d.Power.Power(ctx, labctl.PowerOff); err != nil {
			keep(fmt.Errorf("power off: %w", err))
		}
	}
	if d.Netboot != nil {
		if err := d.Netboot.BootLocal(); err != nil {
			keep(fmt.Errorf("PXE entry: %w", err))
		}
	}
	if first != nil {
		d.event("finalize: error: %v", first)
	}
	return first
}

// waitPrompt waits for a prompt after a boot, failing at once on a line
// that means the boot failed. Meanwhile it answers each firmware
// countdown of Settings.Boot.Skip the first time it shows.
func (d *Driver) waitPrompt(ctx context.Context, timeout time.Duration, what string, prompt *regexp.Regexp) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	patterns := append([]*regexp.Regexp{prompt}, bootFailures...)
	ends := len(patterns)
	var skips []devices.SkipPrompt
	if d.Keys != nil {
		for _, sk := range d.Settings.Boot.Skip {
			skips = append(skips, sk)
			patterns = append(patterns, regexp.MustCompile(regexp.QuoteMeta(sk.Prompt)))
		}
	}
	for {
		m, err := d.Console.Expect(wctx, patterns...)
		if err != nil {
			if ctx.Err() == nil && wctx.Err() != nil {
				return fmt.Errorf("%s did not appear within %s: %w", what, timeout, err)
			}
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if m.Pattern >= ends {
			// Answered once: a countdown that shows again is another
			// boot's business, or a firmware that did not take the key.
			i := m.Pattern - ends
			sk := skips[i]
			patterns = slices.Delete(patterns, m.Pattern, m.Pattern+1)
			skips = slices.Delete(skips, i, i+1)
			d.skip(wctx, sk)
			continue
		}
		if m.Pattern != 0 {
			return fmt.Errorf("waiting for %s: the node printed %q", what, m.Text())
		}
		return nil
	}
}

// Firmware that takes the key goes on at once, and says so on the console
// (iPXE rubs its prompt out). A key the firmware did not see (a loaded
// simulated node's iPXE misses some) is sent again while the console
// stays silent for skipRetry after it, skipTries times in all.
const (
	skipRetry = 300 * time.Millisecond
	skipTries = 3
)

// skip sends the key that ends a firmware countdown. It cannot fail the
// boot: if the key does not get through, the countdown runs out.
func (d *Driver) skip(ctx context.Context, sk devices.SkipPrompt) {
	sub := d.Console.Subscribe(4096)
	defer sub.Close()
	for try := 1; ; try++ {
		if _, err := d.Keys.Write([]byte(sk.Key)); err != nil {
			d.event("firmware countdown %q: could not send %q (%v); it runs out", sk.Prompt, sk.Key, err)
			return
		}
		spoke := consoleSpeaks(ctx, sub, skipRetry)
		switch {
		case spoke && try == 1:
			d.event("firmware countdown %q: sent %q to go on", sk.Prompt, sk.Key)
			return
		case spoke:
			d.event("firmware countdown %q: sent %q to go on, %d times (the console was silent after the first)", sk.Prompt, sk.Key, try)
			return
		case try == skipTries || ctx.Err() != nil:
			d.event("firmware countdown %q: sent %q %d times, the console stayed silent; the countdown runs out", sk.Prompt, sk.Key, try)
			return
		}
	}
}

// consoleSpeaks says whether the node prints something within wait.
func consoleSpeaks(ctx context.Context, sub *sol.Subscription, wait time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		r, err := sub.Next(ctx)
		if err != nil {
			return false
		}
		if r.Dir == sol.Read && len(r.Data) > 0 || r.Missed > 0 {
			return true
		}
	}
}

// power runs one power operation within the power timeout.
func (d *Driver) power(ctx context.Context, op labctl.PowerOp) error {
	pctx, cancel := context.WithTimeout(ctx, d.Settings.Timeouts.Power)
	defer cancel()
	d.event("power %s", op)
	if err := d.Power.Power(pctx, op); err != nil {
		return fmt.Errorf("power %s: %w", op, err)
	}
	return nil
}

// cycle power-cycles the node as the device type's power.cycle says: one
// cycle request, or off and then on, each confirmed.
func (d *Driver) cycle(ctx context.Context) error {
	if d.Settings.Power.Cycle != devices.CycleOffOn {
		return d.power(ctx, labctl.PowerCycle)
	}
	if err := d.power(ctx, labctl.PowerOff); err != nil {
		return err
	}
	return d.power(ctx, labctl.PowerOn)
}

// bootdev sets the next boot device within the power timeout.
func (d *Driver) bootdev(ctx context.Context, dev labctl.BootDevice) error {
	pctx, cancel := context.WithTimeout(ctx, d.Settings.Timeouts.Power)
	defer cancel()
	d.event("bootdev %s", dev)
	if err := d.Power.SetBootDevice(pctx, dev); err != nil {
		return fmt.Errorf("bootdev %s: %w", dev, err)
	}
	return nil
}

func (d *Driver) event(format string, args ...any) {
	if d.Event != nil {
		d.Event(fmt.Sprintf(format, args...))
	}
}

func (d *Driver) now() time.Time {
	if d.Now == nil {
		return time.Now()
	}
	return d.Now()
}

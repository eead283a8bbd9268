package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/console"
)

var _ labctl.ConsoleService = (*Daemon)(nil)

// ensureConsoleWait bounds how long a power-on waits for the node's
// console to open, so that the boot is in the console log.
const ensureConsoleWait = 10 * time.Second

// AttachConsole attaches the caller to a node's console (see Consoles and
// labctl.ConsoleService). ~R on it is a power cycle by the caller, with the
// rules of Power: refused while a job or a health check owns the node.
func (d *Daemon) AttachConsole(ctx context.Context, name string, opts labctl.ConsoleOptions) (labctl.ConsoleAttachment, error) {
	dev, err := d.device(name)
	if err != nil {
		return nil, err
	}
	if dev.nodeErr != nil {
		return nil, fmt.Errorf("%w: %s: %v", labctl.ErrDevice, name, dev.nodeErr)
	}
	caller := labctl.CallerFrom(ctx)
	who := opts.Who
	if who == "" {
		who = caller
	}
	v, err := d.consoles.Attach(name, dev.node.Console, console.AttachOptions{
		ConsoleOptions: opts, Token: caller,
		PowerCycle: func(ctx context.Context) error {
			_, err := d.Power(labctl.WithCaller(ctx, who+" (console)"), name, labctl.PowerRequest{Op: string(labctl.PowerCycle)})
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	d.log.Info("console attached", "device", name, "who", v.Who(), "caller", caller)
	return v, nil
}

// Consoles reports every device's console.
func (d *Daemon) Consoles(ctx context.Context) ([]labctl.ConsoleInfo, error) {
	out := make([]labctl.ConsoleInfo, 0, len(d.names))
	for _, name := range d.names { // never changes after New
		out = append(out, d.consoles.Info(name))
	}
	return out, nil
}

// Console reports one device's console.
func (d *Daemon) Console(ctx context.Context, name string) (labctl.ConsoleInfo, error) {
	if _, err := d.device(name); err != nil {
		return labctl.ConsoleInfo{}, err
	}
	return d.consoles.Info(name), nil
}

// ensureConsole opens the device's console before a power-on through the
// daemon, so that its console log has the boot (not for a device in
// maintenance: its console is left alone).
func (d *Daemon) ensureConsole(ctx context.Context, dev *device) {
	d.mu.Lock()
	maint := dev.maintenance
	d.mu.Unlock()
	if maint {
		return
	}
	if err := d.consoles.Ensure(ctx, dev.name, dev.node.Console, ensureConsoleWait); err != nil {
		d.log.Warn("console not open before power on; the boot may be missing from the console log", "device", dev.name, "err", err)
	}
}

package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/console"
)

var _ labctl.ConsoleService = (*Daemon)(nil)

// ensureConsoleWait bounds how long a power-on waits for the node's
// console to open, so that the boot is in the console log.
const ensureConsoleWait = 10 * time.Second

// newConsoles makes the daemon's console broker: it keeps every node's
// session open, logs it to STATE/devices/NAME/console.log, and a power
// cycle asked for at a console (~R) goes through d.Power, with its rules:
// refused while a job or a health check owns the node. Who takes write
// goes to the audit trail.
func newConsoles(d *Daemon) *console.Broker {
	return console.New(console.Config{
		Lab: d.cfg.Lab, Nodes: consoleNodes{d}, Power: d, WriteTaken: d.consoleWriteTaken, Log: d.log,
		Keep: true, LogDir: filepath.Join(d.cfg.Lab.StateDir, "devices"),
		SessionChanged: d.consoleChanges(),
	})
}

// consoleNodes gives the console broker the daemon's nodes.
type consoleNodes struct{ d *Daemon }

// Node implements labctl.Nodes: a device whose parts could not be made
// has no console (labctl.ErrDevice).
func (n consoleNodes) Node(name string) (*labctl.Node, error) {
	dev, err := n.d.device(name)
	if err != nil {
		return nil, err
	}
	if dev.nodeErr != nil {
		return nil, fmt.Errorf("%w: %s: %v", labctl.ErrDevice, name, dev.nodeErr)
	}
	return dev.node, nil
}

// AttachConsole attaches the caller to a node's console (see
// console.Broker).
func (d *Daemon) AttachConsole(ctx context.Context, name string, opts labctl.ConsoleOptions) (labctl.ConsoleAttachment, error) {
	if _, p, ok, err := d.remote(name); ok {
		if err != nil {
			return nil, err
		}
		return p.AttachConsole(ctx, name, opts)
	}
	return d.consoles.AttachConsole(ctx, name, opts)
}

// Consoles reports every device's console.
func (d *Daemon) Consoles(ctx context.Context) ([]labctl.ConsoleInfo, error) {
	return d.consoles.Consoles(ctx)
}

// Console reports one device's console.
func (d *Daemon) Console(ctx context.Context, name string) (labctl.ConsoleInfo, error) {
	if _, p, ok, err := d.remote(name); ok {
		if err != nil {
			return labctl.ConsoleInfo{}, err
		}
		return p.Console(ctx, name)
	}
	return d.consoles.Console(ctx, name)
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

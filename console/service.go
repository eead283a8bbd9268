package console

import (
	"context"
	"fmt"
	"slices"

	"github.com/labctl/labctl"
)

var _ labctl.ConsoleService = (*Broker)(nil)

// AttachConsole attaches the caller to a node of the lab (Config.Lab and
// Nodes): see labctl.ConsoleService. ~R on it is a power cycle through
// Config.Power, by the caller.
func (c *Broker) AttachConsole(ctx context.Context, name string, opts labctl.ConsoleOptions) (labctl.ConsoleAttachment, error) {
	if err := c.known(name); err != nil {
		return nil, err
	}
	n, err := c.cfg.Nodes.Node(name)
	if err != nil {
		return nil, err
	}
	caller := labctl.CallerFrom(ctx)
	v, err := c.attach(ctx, name, n.Console, opts)
	if err != nil {
		return nil, err
	}
	v.nc.log.Info("console attached", "who", v.who, "caller", caller)
	return v, nil
}

// Consoles reports the console of every node of the lab.
func (c *Broker) Consoles(ctx context.Context) ([]labctl.ConsoleInfo, error) {
	out := make([]labctl.ConsoleInfo, 0, len(c.names))
	for _, name := range c.names {
		out = append(out, c.Info(name))
	}
	return out, nil
}

// Console reports the console of one node of the lab.
func (c *Broker) Console(ctx context.Context, name string) (labctl.ConsoleInfo, error) {
	if err := c.known(name); err != nil {
		return labctl.ConsoleInfo{}, err
	}
	return c.Info(name), nil
}

// known says whether name is a node of the lab, as an error wrapping
// labctl.ErrNotFound if not.
func (c *Broker) known(name string) error {
	if _, ok := slices.BinarySearch(c.names, name); ok {
		return nil
	}
	if c.cfg.Lab == nil {
		return fmt.Errorf("%w: no device %q", labctl.ErrNotFound, name)
	}
	return fmt.Errorf("%w: no device %q in lab %s", labctl.ErrNotFound, name, c.cfg.Lab.Name)
}

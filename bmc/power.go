package bmc

import (
	"context"
	"errors"
	"fmt"
	"time"

	ipmi "github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"

	"github.com/labctl/labctl"
)

// PowerState reports whether the node's power is on.
func (c *Client) PowerState(ctx context.Context) (on bool, err error) {
	const op = "power status"
	ctx, release, err := c.own(ctx, op)
	if err != nil {
		return false, err
	}
	defer release()
	return c.powerState(ctx, op)
}

// Power performs op and confirms it by reading the power state back until
// it shows the expected state or ctx ends (30s when ctx has no deadline).
//
//   - PowerOn, PowerOff: done when the state reads on, off. A node already
//     in that state gets no command.
//   - PowerCycle: done when the state was seen off and then on again, or,
//     when no poll caught the off window, when it has read on for 3s after
//     the BMC accepted the command. ipmi_sim turns the node off at once and
//     on about 1s later; real BMCs keep it off for at least 1s.
//   - PowerReset: done when the BMC accepted the reset and the state reads
//     on (a hard reset keeps power on; some simulators restart the node).
//
// A cycle or reset of a node that is off powers it on instead, also when
// the BMC refuses one because the node went off after it was read (a try
// carried out whose answer was lost).
func (c *Client) Power(ctx context.Context, op PowerOp) error {
	name := op.String()
	var ctl chassis.ChassisControl
	var step string
	switch op {
	case PowerOn:
		ctl, step = chassis.ChassisControlPowerUp, "chassis control power up"
	case PowerOff:
		ctl, step = chassis.ChassisControlPowerDown, "chassis control power down"
	case PowerCycle:
		ctl, step = chassis.ChassisControlPowerCycle, "chassis control power cycle"
	case PowerReset:
		ctl, step = chassis.ChassisControlHardReset, "chassis control hard reset"
	default:
		return fmt.Errorf("bmc %s: %s: unknown power operation", c.addr, name)
	}
	ctx, release, err := c.own(ctx, name)
	if err != nil {
		return err
	}
	defer release()

	start := time.Now()
	on, err := c.powerState(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case op == PowerOn && on, op == PowerOff && !on:
		c.log.Debug(name+": already in that state", "on", on)
		return nil
	case (op == PowerCycle || op == PowerReset) && !on:
		c.log.Info(name + ": node is off, powering it on instead")
		op, ctl, step = PowerOn, chassis.ChassisControlPowerUp, "chassis control power up"
	}

	control := func() error {
		return c.call(ctx, name, step, func(ctx context.Context, ic *ipmi.Client) error {
			_, err := ic.ChassisControl(ctx, ctl)
			return err
		})
	}
	err = control()
	if _, refused := completionCode(err); refused && (op == PowerCycle || op == PowerReset) {
		// A BMC refuses to cycle or reset a node that is off (the spec's
		// D5h). The node was on when read above: a try of this command
		// was carried out though its answer was lost, and the retry found
		// the node off, or the node went off meanwhile. Either way,
		// powering it on finishes what was asked.
		if on, serr := c.powerState(ctx, name); serr == nil && !on {
			c.log.Info(name+": refused with the node off (an earlier try carried out?); powering it on", "err", err)
			op, ctl, step = PowerOn, chassis.ChassisControlPowerUp, "chassis control power up"
			err = control()
		}
	}
	if err != nil {
		return err
	}
	accepted := time.Now()

	if op == PowerCycle {
		err = c.confirmCycle(ctx, name, accepted)
	} else {
		err = c.waitPower(ctx, name, op != PowerOff, accepted)
	}
	if err == nil {
		c.log.Debug(name+": confirmed", "took", time.Since(start).Round(time.Millisecond))
	}
	return err
}

func (c *Client) powerState(ctx context.Context, op string) (bool, error) {
	var on bool
	err := c.call(ctx, op, "get chassis status", func(ctx context.Context, ic *ipmi.Client) error {
		st, err := ic.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		on = st.PowerIsOn
		return nil
	})
	return on, err
}

// confirmDeadline bounds a read-back: ctx's deadline, or 30s.
func (c *Client) confirmDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.t.confirm)
}

// poller reads the power state back every 200ms until its context
// ends; notDone builds the error for a read-back that never got there.
type poller struct {
	c     *Client
	op    string
	reads int
	start time.Time
}

// next waits for the next poll (none before the first) and reads the state.
func (p *poller) next(ctx context.Context) (bool, error) {
	if p.reads > 0 {
		t := time.NewTimer(p.c.t.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
	}
	on, err := p.c.powerState(ctx, p.op)
	if err == nil {
		p.reads++
	}
	return on, err
}

// notDone turns a poll that ended without the wanted state into an error.
func (p *poller) notDone(ctx context.Context, err error, state string) error {
	if p.reads == 0 || !ctxDone(ctx) || p.c.base.Err() != nil {
		return err // the BMC stopped answering, or Close
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return err
	}
	if ie := (*interruptedError)(nil); errors.As(err, &ie) && ie.last != nil {
		return err // the BMC was failing when time ran out: that is the news
	}
	return fmt.Errorf("bmc %s: %s: accepted, but %s after %s (%d reads): %w",
		p.c.addr, p.op, state, since(p.start), p.reads, ctxCause(ctx))
}

// waitPower polls until the power state is want.
func (c *Client) waitPower(ctx context.Context, op string, want bool, accepted time.Time) error {
	ctx, cancel := c.confirmDeadline(ctx)
	defer cancel()
	p := &poller{c: c, op: op, start: accepted}
	for {
		on, err := p.next(ctx)
		if err != nil {
			return p.notDone(ctx, err, "power still "+labctl.OnOff(!want))
		}
		if on == want {
			return nil
		}
	}
}

// confirmCycle polls until the node was seen off and then on again, or has
// read on for 3s without an off in between.
func (c *Client) confirmCycle(ctx context.Context, op string, accepted time.Time) error {
	ctx, cancel := c.confirmDeadline(ctx)
	defer cancel()
	p := &poller{c: c, op: op, start: accepted}
	sawOff := false
	for {
		on, err := p.next(ctx)
		if err != nil {
			state := "power never went off and is still on"
			if sawOff {
				state = "power went off and is not on again"
			}
			return p.notDone(ctx, err, state)
		}
		switch {
		case !on:
			sawOff = true
		case sawOff:
			return nil
		case time.Since(accepted) >= c.t.cycleSettle:
			c.log.Debug(op+": no off state seen between polls; the BMC accepted the cycle and power is on",
				"reads", p.reads)
			return nil
		}
	}
}

package bmc

import (
	"strings"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"
)

func TestPower(t *testing.T) {
	tests := []struct {
		name       string
		startOn    bool
		chassis    func(*fakeChassis)
		op         PowerOp
		wantOn     bool
		wantCycles int
		wantResets int
		wantCtl    int // chassis control commands sent
	}{
		{name: "on from off", op: PowerOn, wantOn: true, wantCtl: 1},
		{name: "on when on sends nothing", startOn: true, op: PowerOn, wantOn: true},
		{name: "off from on", startOn: true, op: PowerOff, wantCtl: 1},
		{name: "off when off sends nothing", op: PowerOff},
		{name: "cycle: off, then on again", startOn: true, op: PowerCycle, wantOn: true, wantCycles: 1, wantCtl: 1},
		{name: "cycle whose off window no poll sees", startOn: true, op: PowerCycle,
			chassis: func(c *fakeChassis) { c.cycleKeepsOn = true }, wantOn: true, wantCycles: 1, wantCtl: 1},
		{name: "cycle from off powers on", op: PowerCycle, wantOn: true, wantCtl: 1},
		{name: "reset keeps power on", startOn: true, op: PowerReset, wantOn: true, wantResets: 1, wantCtl: 1},
		{name: "reset from off powers on", op: PowerReset, wantOn: true, wantCtl: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, withChassis(func(c *fakeChassis) {
				c.on = tt.startOn
				if tt.chassis != nil {
					tt.chassis(c)
				}
			}))
			c, _ := newClient(t, s.config())
			if err := c.Power(ctxFor(t, 10*time.Second), tt.op); err != nil {
				t.Fatalf("%s: %v", tt.op, err)
			}
			on, cycles, resets, _ := s.chassis.state()
			if on != tt.wantOn || cycles != tt.wantCycles || resets != tt.wantResets {
				t.Errorf("chassis after %s: on=%v cycles=%d resets=%d, want on=%v cycles=%d resets=%d",
					tt.op, on, cycles, resets, tt.wantOn, tt.wantCycles, tt.wantResets)
			}
			if n := len(s.rec.commands(types.CommandChassisControl)); n != tt.wantCtl {
				t.Errorf("%d chassis control commands, want %d", n, tt.wantCtl)
			}
			got, err := c.PowerState(ctxFor(t, 5*time.Second))
			if err != nil || got != tt.wantOn {
				t.Errorf("PowerState = %v, %v; want %v", got, err, tt.wantOn)
			}
		})
	}
}

// TestPowerCycleWaitsForOn: Power(cycle) returns only once the node is on
// again, like ipmi_sim's cycle, which powers on about 1s after off.
func TestPowerCycleWaitsForOn(t *testing.T) {
	t.Parallel()
	s := newSim(t, withChassis(func(c *fakeChassis) { c.on, c.cycleDelay = true, 500*time.Millisecond }))
	c, _ := newClient(t, s.config())
	start := time.Now()
	if err := c.Power(ctxFor(t, 10*time.Second), PowerCycle); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("cycle returned after %s, before the node was on again (500ms)", d)
	}
	if on, _, _, _ := s.chassis.state(); !on {
		t.Error("node off after the cycle returned")
	}
}

// TestPowerCycleRefusedOff: the node is off when the cycle reaches the BMC
// (an earlier try was carried out, its answer lost), which refuses it:
// Power powers the node on instead, and succeeds.
func TestPowerCycleRefusedOff(t *testing.T) {
	t.Parallel()
	s := newSim(t, withChassis(func(c *fakeChassis) { c.on, c.offAtCycle = true, true }))
	c, _ := newClient(t, s.config())
	if err := c.Power(ctxFor(t, 10*time.Second), PowerCycle); err != nil {
		t.Fatal(err)
	}
	if on, _, _, _ := s.chassis.state(); !on {
		t.Error("node off after the cycle returned")
	}
}

// TestPowerNotConfirmed: a BMC that accepts the command but whose power
// state never changes gives an error saying so, within the ctx deadline.
func TestPowerNotConfirmed(t *testing.T) {
	t.Parallel()
	s := newSim(t, withChassis(func(c *fakeChassis) { c.ignorePower = true }))
	c, _ := newClient(t, s.config())
	start := time.Now()
	err := c.Power(ctxFor(t, time.Second), PowerOn)
	took := time.Since(start)
	if err == nil {
		t.Fatal("power on of a node that stays off succeeded")
	}
	for _, want := range []string{"bmc " + c.addr, "power on", "accepted, but power still off", "reads"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if took > 1300*time.Millisecond {
		t.Errorf("took %s with a 1s deadline", took)
	}
}

func TestPowerUnknownOp(t *testing.T) {
	c := New(Config{Host: "127.0.0.1"}, nil)
	defer c.Close()
	if err := c.Power(ctxFor(t, time.Second), PowerOp(42)); err == nil {
		t.Fatal("unknown power op accepted")
	}
}

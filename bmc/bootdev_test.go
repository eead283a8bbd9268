package bmc

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"
)

func TestSetBootDevice(t *testing.T) {
	tests := []struct {
		dev      BootDevice
		opt      BootOptions
		selector types.BootDeviceSelector
	}{
		{BootPXE, BootOptions{}, types.BootDeviceSelectorForcePXE},
		{BootPXE, BootOptions{EFI: true, Persistent: true}, types.BootDeviceSelectorForcePXE},
		{BootDisk, BootOptions{EFI: true}, types.BootDeviceSelectorForceHardDrive},
		{BootDisk, BootOptions{Persistent: true}, types.BootDeviceSelectorForceHardDrive},
	}
	s := newSim(t)
	c, _ := newClient(t, s.config())
	for _, tt := range tests {
		if err := c.SetBootDevice(ctxFor(t, 5*time.Second), tt.dev, tt.opt); err != nil {
			t.Fatalf("SetBootDevice(%s, %+v): %v", tt.dev, tt.opt, err)
		}
		_, _, _, f := s.chassis.state()
		if f == nil || !f.BootFlagsValid || f.BootDeviceSelector != tt.selector ||
			bool(f.BIOSBootType) != tt.opt.EFI || f.Persist != tt.opt.Persistent {
			t.Errorf("SetBootDevice(%s, %+v): BMC holds %+v", tt.dev, tt.opt, f)
		}
		dev, opt, err := c.BootDevice(ctxFor(t, 5*time.Second))
		if err != nil || dev != tt.dev || opt != tt.opt {
			t.Errorf("BootDevice after setting %s %+v = %s %+v, %v", tt.dev, tt.opt, dev, opt, err)
		}
	}
}

// TestSetBootDeviceSequence: the parameters go out as ipmitool's chassis
// bootdev sends them; a BMC that refuses set-in-progress (the reference BMC
// does) gets the rest without it.
func TestSetBootDeviceSequence(t *testing.T) {
	for _, sip := range []bool{true, false} {
		s := newSim(t, withRecorder(func(r *recorder) { r.setInProgress = sip }))
		c, _ := newClient(t, s.config())
		if err := c.SetBootDevice(ctxFor(t, 5*time.Second), BootPXE, BootOptions{EFI: true}); err != nil {
			t.Fatalf("set-in-progress supported=%v: %v", sip, err)
		}
		var got [][]byte
		for _, r := range s.rec.commands(types.CommandSetSystemBootOptions) {
			got = append(got, r.data)
		}
		want := [][]byte{
			{0x00, 0x01},                         // set in progress
			{0x04, 0x01, 0x01},                   // boot info acknowledge, as ipmitool
			{0x05, 0xa0, 0x04, 0x00, 0x00, 0x00}, // valid | EFI, force PXE
		}
		if sip {
			want = append(want, []byte{0x00, 0x00}) // set complete
		}
		if len(got) != len(want) {
			t.Fatalf("set-in-progress supported=%v: sent %x, want %x", sip, got, want)
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("set-in-progress supported=%v: parameter write %d = %x, want %x", sip, i, got[i], want[i])
			}
		}
	}
}

// TestSetBootDeviceReadBack covers BMCs that cannot read the flags back,
// report them invalid (ipmi_sim) or hold another device.
func TestSetBootDeviceReadBack(t *testing.T) {
	t.Run("invalid, like ipmi_sim", func(t *testing.T) {
		s := newSim(t, withChassis(func(c *fakeChassis) { c.readBack = "invalid" }))
		c, log := newClient(t, s.config())
		if err := c.SetBootDevice(ctxFor(t, 5*time.Second), BootDisk, BootOptions{}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log.String(), "invalid") || !strings.Contains(log.String(), "level=DEBUG") {
			t.Errorf("no debug log line about the invalid read-back:\n%s", log)
		}
		dev, _, err := c.BootDevice(ctxFor(t, 5*time.Second))
		if err != nil || dev != BootNone {
			t.Errorf("BootDevice = %s, %v; want none", dev, err)
		}
	})
	t.Run("unsupported", func(t *testing.T) {
		s := newSim(t, withChassis(func(c *fakeChassis) { c.readBack = "unsupported" }))
		c, log := newClient(t, s.config())
		if err := c.SetBootDevice(ctxFor(t, 5*time.Second), BootPXE, BootOptions{}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log.String(), "cannot read boot flags back") {
			t.Errorf("no log line about the missing read-back:\n%s", log)
		}
		_, _, err := c.BootDevice(ctxFor(t, 5*time.Second))
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("BootDevice error = %v, want ErrUnsupported", err)
		}
	})
	t.Run("another device", func(t *testing.T) {
		disk := types.BootDeviceSelectorForceHardDrive
		s := newSim(t, withChassis(func(c *fakeChassis) { c.storeAs = &disk }))
		c, _ := newClient(t, s.config())
		err := c.SetBootDevice(ctxFor(t, 5*time.Second), BootPXE, BootOptions{})
		if err == nil || !strings.Contains(err.Error(), "reads back disk") || !strings.Contains(err.Error(), "bootdev pxe") {
			t.Errorf("error = %v, want one about reading back disk", err)
		}
	})
}

func TestSetBootDeviceRefusesOthers(t *testing.T) {
	c := New(Config{Host: "127.0.0.1"}, nil)
	defer c.Close()
	for _, d := range []BootDevice{BootNone, BootOther} {
		if err := c.SetBootDevice(ctxFor(t, time.Second), d, BootOptions{}); err == nil {
			t.Errorf("SetBootDevice(%s) accepted", d)
		}
	}
}

func TestParseBootFlags(t *testing.T) {
	tests := []struct {
		data []byte
		dev  BootDevice
		opt  BootOptions
	}{
		{nil, BootNone, BootOptions{}},
		{[]byte{0x80}, BootNone, BootOptions{}},
		{[]byte{0x00, 0x04, 0, 0, 0}, BootNone, BootOptions{}}, // not valid
		{[]byte{0x80, 0x04, 0, 0, 0}, BootPXE, BootOptions{}},
		{[]byte{0xe0, 0x08, 0, 0, 0}, BootDisk, BootOptions{EFI: true, Persistent: true}},
		{[]byte{0x80, 0x0c, 0, 0, 0}, BootDisk, BootOptions{}}, // safe mode
		{[]byte{0xa0, 0x14, 0, 0, 0}, BootOther, BootOptions{EFI: true}},
		{[]byte{0x80, 0x00, 0, 0, 0}, BootNone, BootOptions{}},                // no override
		{[]byte{0xc0, 0x84, 0, 0, 0}, BootPXE, BootOptions{Persistent: true}}, // CMOS clear bit ignored
	}
	for _, tt := range tests {
		dev, opt := parseBootFlags(tt.data)
		if dev != tt.dev || opt != tt.opt {
			t.Errorf("parseBootFlags(%x) = %s %+v, want %s %+v", tt.data, dev, opt, tt.dev, tt.opt)
		}
	}
}

// FuzzParseBootFlags: boot flags come from the BMC; no input may panic or
// give a device outside the enum, flags not marked valid mean nothing, and
// valid ones give their EFI and persistent bits and PXE exactly for the
// PXE selector.
func FuzzParseBootFlags(f *testing.F) {
	f.Add([]byte{0x80, 0x04, 0, 0, 0})
	f.Add([]byte{0xe0, 0x08, 0, 0, 0})
	f.Add([]byte{0x60, 0x04, 0, 0, 0})
	f.Add([]byte{0xa0, 0x3c})
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		dev, opt := parseBootFlags(data)
		if dev < BootNone || dev > BootOther {
			t.Fatalf("device %d", dev)
		}
		if len(data) < 2 || data[0]&bootFlagValid == 0 {
			if dev != BootNone || opt != (BootOptions{}) {
				t.Fatalf("flags % x not valid, read as %s %+v", data, dev, opt)
			}
			return
		}
		if opt.EFI != (data[0]&bootFlagEFI != 0) || opt.Persistent != (data[0]&bootFlagPersistent != 0) {
			t.Fatalf("flags % x read as %+v", data, opt)
		}
		if pxe := types.BootDeviceSelector((data[1]>>2)&0x0f) == types.BootDeviceSelectorForcePXE; pxe != (dev == BootPXE) {
			t.Fatalf("flags % x read as %s", data, dev)
		}
	})
}

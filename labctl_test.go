package labctl

import (
	"errors"
	"testing"
)

func TestOutcomeExitCode(t *testing.T) {
	for o, want := range map[Outcome]int{Complete: 0, Failed: 1, Incomplete: 2, Canceled: 3, "bogus": 2} {
		if got := o.ExitCode(); got != want {
			t.Errorf("%q.ExitCode() = %d, want %d", o, got, want)
		}
	}
}

func TestParsePowerOp(t *testing.T) {
	for _, op := range PowerOps {
		if got, err := ParsePowerOp(string(op)); err != nil || got != op {
			t.Errorf("ParsePowerOp(%q) = %q, %v", op, got, err)
		}
	}
	for _, bad := range []string{"", "status", "ON", "off "} {
		if _, err := ParsePowerOp(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParsePowerOp(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParseBootDevice(t *testing.T) {
	for _, dev := range []BootDevice{BootPXE, BootDisk} {
		if got, err := ParseBootDevice(string(dev)); err != nil || got != dev {
			t.Errorf("ParseBootDevice(%q) = %q, %v", dev, got, err)
		}
	}
	if _, err := ParseBootDevice("cdrom"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseBootDevice(cdrom) = %v, want ErrInvalid", err)
	}
}

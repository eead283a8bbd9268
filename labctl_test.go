package labctl

import (
	"context"
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

func TestRoles(t *testing.T) {
	for i, r := range Roles {
		for j, need := range Roles {
			if got := r.Allows(need); got != (i >= j) {
				t.Errorf("%s.Allows(%s) = %v", r, need, got)
			}
		}
	}
	if Role("root").Allows(RoleViewer) {
		t.Error("an unknown role allows something")
	}
	var r Role
	if err := r.UnmarshalText([]byte("superuser")); err == nil {
		t.Error("UnmarshalText accepted an unknown role")
	}
	ctx := WithRole(WithCaller(context.Background(), "bob"), RoleViewer)
	err := Authorize(ctx, RoleOperator, "power node1")
	if !errors.Is(err, ErrForbidden) || err.Error() != "forbidden: power node1 needs role operator; bob has role viewer" {
		t.Errorf("Authorize = %v", err)
	}
	if err := Authorize(context.Background(), RoleAdmin, "anything"); err != nil {
		t.Errorf("an in-process caller was refused: %v", err)
	}
}

package bmc

import (
	"context"
	"errors"
	"fmt"

	ipmi "github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"
)

// Boot flags (boot option parameter 5, IPMI v2.0 table 28-14), byte 1.
const (
	bootFlagValid      = 0x80
	bootFlagPersistent = 0x40
	bootFlagEFI        = 0x20
)

// SetBootDevice makes the node boot from dev, the way ipmitool's "chassis
// bootdev" does it: set in progress, boot info acknowledge, boot flags, set
// complete (a BMC that refuses "set in progress" gets the rest without it,
// as ipmitool does). Many BMCs forget the flags 60s after they are set
// unless a power-on or reset follows: set them right before one.
//
// The flags are then read back. A different device is an error; different
// EFI or persistent bits are logged as a warning (some boards ignore them).
// A BMC that cannot read the flags back, or reports them invalid (ipmi_sim
// always does), is logged at debug level and not an error.
func (c *Client) SetBootDevice(ctx context.Context, dev BootDevice, opt BootOptions) error {
	op := "bootdev " + dev.String()
	var sel types.BootDeviceSelector
	switch dev {
	case BootPXE:
		sel = types.BootDeviceSelectorForcePXE
	case BootDisk:
		sel = types.BootDeviceSelectorForceHardDrive
	default:
		return fmt.Errorf("bmc %s: %s: only pxe and disk can be set", c.addr, op)
	}
	ctx, release, err := c.own(ctx, op)
	if err != nil {
		return err
	}
	defer release()

	set := func(step string, param types.BootOptionParamSelector, data ...byte) error {
		return c.call(ctx, op, step, func(ctx context.Context, ic *ipmi.Client) error {
			_, err := ic.SetSystemBootOptionsParam(ctx, &chassis.SetSystemBootOptionsParamRequest{
				ParamSelector: param,
				ParamData:     data,
			})
			return err
		})
	}

	inProgress := true
	if err := set("set in progress", types.BootOptionParamSelector_SetInProgress, 0x01); err != nil {
		if _, answered := completionCode(err); !answered {
			return err
		}
		c.log.Debug(op+": BMC refuses set-in-progress; setting the flags without it", "err", err)
		inProgress = false
	}
	complete := func(err error) error {
		// Release the parameters unless the BMC stopped answering.
		if _, answered := completionCode(err); inProgress && (err == nil || answered) {
			if cerr := set("set complete", types.BootOptionParamSelector_SetInProgress, 0x00); cerr != nil {
				if err == nil {
					c.log.Warn(op+": set complete failed", "err", cerr)
				}
			}
		}
		return err
	}
	// ipmitool writes {01h, 01h}: clear the "BIOS/POST has handled the boot
	// info" bit so that the BIOS looks at the new flags.
	if err := set("boot info acknowledge", types.BootOptionParamSelector_BootInfoAcknowledge, 0x01, 0x01); err != nil {
		return complete(err)
	}
	b0 := byte(bootFlagValid)
	if opt.Persistent {
		b0 |= bootFlagPersistent
	}
	if opt.EFI {
		b0 |= bootFlagEFI
	}
	if err := complete(set("boot flags", types.BootOptionParamSelector_BootFlags, b0, byte(sel)<<2, 0, 0, 0)); err != nil {
		return err
	}

	got, gotOpt, err := c.bootFlags(ctx, op)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		c.log.Debug(op+": set; the BMC cannot read boot flags back", "err", err)
		return nil
	case err != nil:
		return err
	case got == BootNone:
		c.log.Debug(op + ": set; the BMC reads the boot flags back as invalid (ipmi_sim always does), not checked")
		return nil
	case got != dev:
		return fmt.Errorf("bmc %s: %s: set, but the BMC reads back %s (%+v)", c.addr, op, got, gotOpt)
	case gotOpt != opt:
		c.log.Warn(op+": set, but the BMC reads back other options", "want", fmt.Sprintf("%+v", opt), "got", fmt.Sprintf("%+v", gotOpt))
	}
	return nil
}

// BootDevice reads the boot device set for the next boot (or all boots,
// when persistent). BootNone means the BMC reports no valid flags. A BMC that
// cannot read the flags gives an error wrapping errors.ErrUnsupported.
func (c *Client) BootDevice(ctx context.Context) (BootDevice, BootOptions, error) {
	const op = "bootdev read"
	ctx, release, err := c.own(ctx, op)
	if err != nil {
		return BootNone, BootOptions{}, err
	}
	defer release()
	return c.bootFlags(ctx, op)
}

func (c *Client) bootFlags(ctx context.Context, op string) (BootDevice, BootOptions, error) {
	var data []byte
	err := c.call(ctx, op, "get boot flags", func(ctx context.Context, ic *ipmi.Client) error {
		res, err := ic.GetSystemBootOptionsParam(ctx, types.BootOptionParamSelector_BootFlags, 0, 0)
		if err != nil {
			return err
		}
		data = res.ParamData
		return nil
	})
	if err != nil {
		if _, answered := completionCode(err); answered {
			return BootNone, BootOptions{}, fmt.Errorf("%w (%w)", err, errors.ErrUnsupported)
		}
		return BootNone, BootOptions{}, err
	}
	dev, opt := parseBootFlags(data)
	return dev, opt, nil
}

// parseBootFlags decodes boot option parameter 5.
func parseBootFlags(data []byte) (BootDevice, BootOptions) {
	if len(data) < 2 || data[0]&bootFlagValid == 0 {
		return BootNone, BootOptions{}
	}
	opt := BootOptions{
		EFI:        data[0]&bootFlagEFI != 0,
		Persistent: data[0]&bootFlagPersistent != 0,
	}
	switch types.BootDeviceSelector((data[1] >> 2) & 0x0f) {
	case types.BootDeviceSelectorNoOverride:
		return BootNone, opt
	case types.BootDeviceSelectorForcePXE:
		return BootPXE, opt
	case types.BootDeviceSelectorForceHardDrive, types.BootDeviceSelectorForceHardDriveSafe:
		return BootDisk, opt
	}
	return BootOther, opt
}

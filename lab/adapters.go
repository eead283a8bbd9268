package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/bmc"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/netboot"
)

// ipmiPower is labctl.Power over native IPMI.
type ipmiPower struct {
	client *bmc.Client
	opts   bmc.BootOptions
}

var powerOps = map[labctl.PowerOp]bmc.PowerOp{
	labctl.PowerOn:    bmc.PowerOn,
	labctl.PowerOff:   bmc.PowerOff,
	labctl.PowerCycle: bmc.PowerCycle,
	labctl.PowerReset: bmc.PowerReset,
}

func (p *ipmiPower) Power(ctx context.Context, op labctl.PowerOp) error {
	bop, ok := powerOps[op]
	if !ok {
		return fmt.Errorf("unknown power operation %q", op)
	}
	return p.client.Power(ctx, bop)
}

func (p *ipmiPower) PowerState(ctx context.Context) (bool, error) {
	return p.client.PowerState(ctx)
}

func (p *ipmiPower) SetBootDevice(ctx context.Context, dev labctl.BootDevice) error {
	switch dev {
	case labctl.BootPXE:
		return p.client.SetBootDevice(ctx, bmc.BootPXE, p.opts)
	case labctl.BootDisk:
		return p.client.SetBootDevice(ctx, bmc.BootDisk, p.opts)
	}
	return fmt.Errorf("unknown boot device %q", dev)
}

// commandPower is labctl.Power through the device type's shell
// commands (LAVA style: a PDU, a relay, ipmitool). The BMC password, if the
// device has one, reaches the commands in IPMI_PASSWORD, never in argv.
type commandPower struct {
	d   *devices.Device
	set devices.Power
	env []string
	log *slog.Logger
}

func newCommandPower(d *devices.Device, log *slog.Logger) *commandPower {
	return &commandPower{d: d, set: d.Settings.Power, env: passwordEnv(d), log: log.With("device", d.Name)}
}

// confirmPoll is how often the power state is read while waiting for a
// change to show.
const confirmPoll = 500 * time.Millisecond

func (p *commandPower) Power(ctx context.Context, op labctl.PowerOp) error {
	switch op {
	case labctl.PowerOn:
		return p.switchTo(ctx, true)
	case labctl.PowerOff:
		return p.switchTo(ctx, false)
	case labctl.PowerCycle, labctl.PowerReset:
		if !p.set.ResetCommand.IsZero() {
			if _, err := p.run(ctx, "reset", p.set.ResetCommand); err != nil {
				return err
			}
			return p.waitFor(ctx, true)
		}
		if err := p.switchTo(ctx, false); err != nil {
			return err
		}
		return p.switchTo(ctx, true)
	}
	return fmt.Errorf("unknown power operation %q", op)
}

// switchTo runs the on or off command and waits until the status command
// agrees.
func (p *commandPower) switchTo(ctx context.Context, on bool) error {
	name, cmd := "off", p.set.OffCommand
	if on {
		name, cmd = "on", p.set.OnCommand
	}
	if _, err := p.run(ctx, name, cmd); err != nil {
		return err
	}
	return p.waitFor(ctx, on)
}

func (p *commandPower) waitFor(ctx context.Context, on bool) error {
	for {
		got, err := p.PowerState(ctx)
		if err == nil && got == on {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("power %s: waiting for the node to be %s: %w", p.d.Name, labctl.OnOff(on), err)
			}
			return fmt.Errorf("power %s: still %s when the wait for %s ended: %w", p.d.Name, labctl.OnOff(got), labctl.OnOff(on), ctx.Err())
		case <-time.After(confirmPoll):
		}
	}
}

func (p *commandPower) PowerState(ctx context.Context) (bool, error) {
	out, err := p.run(ctx, "status", p.set.StatusCommand)
	if err != nil {
		return false, err
	}
	return p.set.StatusOnRegexp.MatchString(out), nil
}

func (p *commandPower) SetBootDevice(ctx context.Context, dev labctl.BootDevice) error {
	cmd := p.set.BootdevDiskCommand
	if dev == labctl.BootPXE {
		cmd = p.set.BootdevPXECommand
	}
	if cmd.IsZero() {
		// No way to choose: the node tries PXE first and its local-boot
		// PXE entry sends it on to the disk.
		return nil
	}
	_, err := p.run(ctx, "bootdev "+string(dev), cmd)
	return err
}

// run runs one of the device's commands, retrying failures, each try
// bounded by the power timeout. Errors name the device and the program,
// and quote the end of its output.
func (p *commandPower) run(ctx context.Context, what string, c devices.Command) (string, error) {
	argv, err := p.d.Argv(c)
	if err != nil {
		return "", err
	}
	var last error
	for try := 0; try <= p.set.Retries; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return "", fmt.Errorf("power %s: %s command %s: %w (after %d tries; last: %v)", p.d.Name, what, argv[0], ctx.Err(), try, last)
			case <-time.After(time.Duration(try) * 500 * time.Millisecond):
			}
		}
		tctx, cancel := context.WithTimeout(ctx, p.set.Timeout)
		cmd := exec.CommandContext(tctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), p.env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		if err == nil {
			return out.String(), nil
		}
		if errors.Is(tctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", p.set.Timeout)
		}
		last = fmt.Errorf("%v: %s", err, tail(out.String()))
		p.log.Debug("power command failed", "what", what, "try", try+1, "err", last)
	}
	return "", fmt.Errorf("power %s: %s command %s failed %d times: %v", p.d.Name, what, argv[0], p.set.Retries+1, last)
}

func tail(s string) string {
	s = string(bytes.TrimSpace([]byte(s)))
	if len(s) > 200 {
		s = "..." + s[len(s)-200:]
	}
	return fmt.Sprintf("%q", s)
}

// nodeBoot is labctl.Netboot: one device's entry on the boot server.
type nodeBoot struct {
	lab           *Lab
	dev           *devices.Device
	srv           *netboot.Server
	mac           net.HardwareAddr
	ip            net.IP
	master, local netboot.Entry
}

func (b *nodeBoot) BootMaster() error { return b.srv.SetNode(b.mac, b.ip, b.master) }
func (b *nodeBoot) BootLocal() error  { return b.srv.SetNode(b.mac, b.ip, b.local) }

func (b *nodeBoot) BootKernel(kernelURL, initrdURL, cmdline string) error {
	return b.srv.SetNode(b.mac, b.ip, netboot.KernelEntry(kernelURL, initrdURL, cmdline))
}

// ExportRoot exports dir on the lab's NFS server to the device's address
// (its ip, or the lab's nfs.client for nodes behind a NAT).
func (b *nodeBoot) ExportRoot(ctx context.Context, dir string) (labctl.RootExport, error) {
	g, err := b.lab.NFS()
	if err != nil {
		return nil, err
	}
	client := b.dev.IP
	if c := b.lab.Config.NFS.Client; c != "" {
		client = netip.MustParseAddr(c)
	}
	if !client.IsValid() {
		return nil, fmt.Errorf("device %s has no ip: its NFS export is restricted to its address (set ip in its device file, or nfs.client in the lab)", b.dev.Name)
	}
	return g.Export(ctx, dir, client)
}

func (b *nodeBoot) PublishImage(f *os.File) (labctl.PublishedImage, error) {
	return b.srv.PublishImage(f)
}

func (b *nodeBoot) AcceptUploads(dir string) (string, func(), error) {
	u, err := b.srv.AcceptUpload(dir)
	if err != nil {
		return "", nil, err
	}
	return u.URL(), func() { u.Close() }, nil
}

func (b *nodeBoot) AcceptSave(dir string, rawSize int64, rawSHA256 string) (labctl.SaveUpload, error) {
	sv, err := b.srv.AcceptSave(dir, rawSize, rawSHA256)
	if err != nil {
		return nil, err
	}
	return saveUpload{sv}, nil
}

// saveUpload is a netboot.Save as a labctl.SaveUpload.
type saveUpload struct{ *netboot.Save }

func (s saveUpload) Wait(ctx context.Context) (labctl.SaveResult, error) {
	r, err := s.Save.Wait(ctx)
	return labctl.SaveResult{Size: r.Size, RawSize: r.RawSize, RawSHA256: r.RawSHA256}, err
}

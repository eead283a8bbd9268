// Package lab turns a lab's configuration into working parts: for each
// device, its power controller (IPMI or shell commands), its console dialer
// (a connection command in a pty, or native IPMI Serial over LAN) and its
// entry on the boot server. It is where the leaf packages (bmc, sol,
// netboot) meet the dispatcher's interfaces; labctl run and labctl serve
// both build their devices here.
package lab

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/bmc"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/netboot"
	"github.com/labctl/labctl/nfs"
	"github.com/labctl/labctl/sol"
)

// Lab holds the live connections of a lab: one BMC client per BMC, shared
// by everything that talks to it, so that its commands are serialised.
type Lab struct {
	Config *devices.Lab
	// Boot is the boot server; nil when nothing boots (labctl power).
	Boot *netboot.Server
	log  *slog.Logger

	mu   sync.Mutex
	bmcs map[string]*bmc.Client // by host:port
	// ObserveBMC, if set before the nodes are made, hears every BMC
	// request (bmc.Config.Observe): labctl serve's metrics.
	ObserveBMC bmc.Observer

	nfsOnce sync.Once
	nfs     *nfs.Ganesha
	nfsErr  error
}

// NFS returns the manager of labctl's exports on the lab's NFS server
// ([nfs] in lab.toml), made at the first call; an error when the lab has
// none.
func (l *Lab) NFS() (*nfs.Ganesha, error) {
	l.nfsOnce.Do(func() {
		c := l.Config.NFS
		if c.Server == "" {
			l.nfsErr = fmt.Errorf("lab %s has no NFS server: add [nfs] to %s (docs/diskless.md)", l.Config.Name, l.Config.File)
			return
		}
		l.nfs, l.nfsErr = nfs.NewGanesha(nfs.GaneshaConfig{
			ExportsDir: c.ExportsDir, PIDFile: c.PIDFile, LogFile: c.LogFile,
			Host: c.Host, Port: c.Port, FirstExportID: c.FirstExportID,
		}, l.log)
	})
	return l.nfs, l.nfsErr
}

// New returns the lab's parts. boot may be nil. With a boot server (the
// process that runs jobs) and an [nfs] server, labctl's exports left by
// an earlier run are withdrawn now (see nfs.NewGanesha).
func New(cfg *devices.Lab, boot *netboot.Server, log *slog.Logger) *Lab {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Lab{Config: cfg, Boot: boot, log: log, bmcs: map[string]*bmc.Client{}}
	if boot != nil && cfg.NFS.Server != "" {
		if _, err := l.NFS(); err != nil {
			log.Warn("nfs", "err", err)
		}
	}
	return l
}

// Close ends every BMC session.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, c := range l.bmcs {
		c.Close()
		delete(l.bmcs, k)
	}
	if l.nfs != nil {
		l.nfs.Close()
	}
	return nil
}

// Node builds the parts of the named device.
func (l *Lab) Node(name string) (*labctl.Node, error) {
	d, ok := l.Config.Device(name)
	if !ok {
		return nil, fmt.Errorf("%w: no device %q in lab %s", labctl.ErrNotFound, name, l.Config.File)
	}
	power, err := l.Power(d)
	if err != nil {
		return nil, err
	}
	console, err := l.Console(d)
	if err != nil {
		return nil, err
	}
	n := &labctl.Node{Power: power, Console: console}
	if l.Boot != nil {
		n.Netboot = l.Netboot(d)
	}
	return n, nil
}

// BMC returns the shared IPMI client of the device's BMC.
func (l *Lab) BMC(d *devices.Device) (*bmc.Client, error) {
	pw, err := d.Password()
	if err != nil {
		return nil, err
	}
	cfg := bmc.Config{
		Host:        d.BMC.Host,
		Port:        d.BMC.Port,
		User:        d.BMC.User,
		Password:    pw.Reveal(),
		CipherSuite: d.Settings.Power.CipherSuite,
		Timeout:     d.Settings.Power.Timeout,
		Retries:     d.Settings.Power.Retries,
		Observe:     l.ObserveBMC,
	}
	key := net.JoinHostPort(d.BMC.Host, strconv.Itoa(d.BMC.Port))
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.bmcs[key]; ok {
		return c, nil
	}
	c := bmc.New(cfg, l.log.With("device", d.Name))
	l.bmcs[key] = c
	return c, nil
}

// Power returns the device's power controller, as its device type says:
// IPMI spoken natively, or shell commands.
func (l *Lab) Power(d *devices.Device) (labctl.Power, error) {
	switch d.Settings.Power.Method {
	case devices.PowerCommand:
		return newCommandPower(d, l.log), nil
	default:
		c, err := l.BMC(d)
		if err != nil {
			return nil, err
		}
		return &ipmiPower{client: c, opts: bmc.BootOptions{
			EFI:        d.Settings.Bootdev.EFI,
			Persistent: d.Settings.Bootdev.Persistent,
		}}, nil
	}
}

// Console returns the device's console dialer: its connection command in a
// pty (the password in IPMI_PASSWORD, for ipmitool -E), or native SOL.
func (l *Lab) Console(d *devices.Device) (sol.Dialer, error) {
	switch d.Settings.Console.Driver {
	case devices.ConsoleCmd:
		argv, err := d.Argv(d.Settings.Console.ConnectionCommand)
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		program, _ := sol.Program(argv)
		dialer := &sol.CommandDialer{
			Argv: argv,
			Env:  passwordEnv(d),
			Name: fmt.Sprintf("%s console (%s, bmc %s)", d.Name, program, net.JoinHostPort(d.BMC.Host, strconv.Itoa(d.BMC.Port))),
			Log:  l.log.With("device", d.Name),
		}
		if re := d.Settings.Console.ReadyRegexp.Regexp(); re != nil {
			dialer.Ready = re
		}
		if !d.Settings.Console.ResetCommand.IsZero() {
			reset, err := d.Argv(d.Settings.Console.ResetCommand)
			if err != nil {
				return nil, fmt.Errorf("console reset: %w", err)
			}
			dialer.Reset = reset
		}
		return dialer, nil
	default:
		c, err := l.BMC(d)
		if err != nil {
			return nil, err
		}
		target := fmt.Sprintf("%s console (native SOL, bmc %s)", d.Name, net.JoinHostPort(d.BMC.Host, strconv.Itoa(d.BMC.Port)))
		return sol.StreamDialer(target, c.OpenSOL), nil
	}
}

// passwordEnv is the environment that carries the device's BMC password
// to its commands (ipmitool -E reads IPMI_PASSWORD), or nothing if the
// device has none configured.
func passwordEnv(d *devices.Device) []string {
	if d.BMC.PasswordFile == "" && d.BMC.PasswordEnv == "" {
		return nil
	}
	pw, err := d.Password()
	if err != nil {
		return nil // the command will fail to log in and say so
	}
	return []string{"IPMI_PASSWORD=" + pw.Reveal()}
}

// Netboot returns the device's entry on the boot server. A device whose
// IP another device of the lab shares (simlab nodes all get 10.0.2.15, each
// on its own user-mode network) is known to the boot server by its MAC
// only: hex-IP config names could not tell those devices apart.
func (l *Lab) Netboot(d *devices.Device) labctl.Netboot {
	var ip net.IP
	if d.IP.IsValid() && !l.ipShared(d) {
		ip = net.IP(d.IP.AsSlice())
	}
	m := d.Settings.Master
	return &nodeBoot{
		lab:    l,
		dev:    d,
		srv:    l.Boot,
		mac:    net.HardwareAddr(d.MAC),
		ip:     ip,
		master: netboot.MasterEntry(m.Kernel, m.Initrd, m.Append),
		local:  netboot.LocalEntry(d.Settings.LocalBoot.Entry),
	}
}

// ipShared reports whether another device of the lab has d's IP.
func (l *Lab) ipShared(d *devices.Device) bool {
	for _, o := range l.Config.Devices {
		if o != d && o.Name != d.Name && o.IP == d.IP {
			return true
		}
	}
	return false
}

// RegisterAll gives every device of the lab its local-boot entry on the
// boot server: the state between jobs.
func (l *Lab) RegisterAll() error {
	for _, d := range l.Config.Devices {
		if err := l.Netboot(d).BootLocal(); err != nil {
			return fmt.Errorf("device %s: %w", d.Name, err)
		}
	}
	return nil
}

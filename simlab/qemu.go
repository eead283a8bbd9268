package simlab

import (
	"path/filepath"
	"strconv"
)

// qemuArgs is the QEMU command line of a node's next power-on, booting from
// the network first when netFirst, else from its disk first. The console is
// fd 3, one end of a socketpair held by the relay, so no TCP port and no
// reconnect is involved.
//
//   - -nographic (with an explicit -serial and -monitor none) makes QEMU tell
//     SeaBIOS to mirror its screen to the serial port ("sercon"), so BIOS,
//     iPXE and syslinux output reaches SOL like BIOS console redirection.
//     Don't add SERIAL to syslinux configs then, or lines print twice. OVMF
//     writes its console to the serial port by itself.
//   - cache=unsafe: writes stay in the host page cache, which survives the
//     SIGKILL of a power-off; flushes are ignored (fast dd ... conv=fsync).
//   - User-mode networking: the guest is 10.0.2.15, the host's loopback is
//     10.0.2.2; the DHCP bootfile is a full tftp:// URL, which iPXE fetches
//     from any port (a real NIC ROM would use port 69). On the bridge the
//     NIC is the node's tap device and dnsmasq answers DHCP.
//   - Boot order: SeaBIOS takes -boot order; OVMF ignores it and follows
//     each device's bootindex, which QEMU hands it at every start, so the
//     relay sets them per power-on as a BMC's boot flags would.
//   - UEFI nodes use OVMF's own network drivers (romfile= drops the NIC's
//     iPXE ROM), as a server's firmware would.
func qemuArgs(c NodeConfig, netFirst bool) ([]string, error) {
	mem := c.MemoryMB
	if mem <= 0 {
		mem = 256
	}
	args := []string{
		"-name", "simlab-" + c.Name,
		"-accel", c.Accel,
		"-m", strconv.Itoa(mem),
		"-nographic",
		"-monitor", "none",
		"-chardev", "socket,id=console,fd=3",
		"-serial", "chardev:console",
	}
	if c.NetNS != "" {
		args = append(args, "-netdev", "tap,id=net0,ifname="+c.Tap+",script=no,downscript=no")
	} else {
		args = append(args, "-netdev", "user,id=net0,bootfile="+c.BootFile)
	}
	if c.Firmware == "" {
		c.Firmware = FirmwareBIOS
	}
	fw, err := firmwareFiles(c.Firmware)
	if err != nil {
		return nil, err
	}
	if c.Firmware == FirmwareBIOS {
		order := "c"
		if netFirst {
			order = "n"
		}
		return append(args,
			"-drive", "file="+c.Disk+",if=virtio,format=raw,cache=unsafe",
			"-device", "virtio-net-pci,netdev=net0,mac="+c.MAC,
			"-boot", "order="+order), nil
	}
	netIndex, diskIndex := "2", "1"
	if netFirst {
		netIndex, diskIndex = "1", "2"
	}
	machine := "q35"
	if fw.SecureBoot {
		machine = "q35,smm=on"
		args = append(args, "-global", "driver=cfi.pflash01,property=secure,value=on")
	}
	if fw.HTTPOnly {
		args = append(args,
			"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
			"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
	}
	return append(args,
		"-machine", machine,
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+fw.Code,
		"-drive", "if=pflash,format=raw,unit=1,file="+filepath.Join(c.Dir, varsFile),
		"-drive", "file="+c.Disk+",if=none,id=disk0,format=raw,cache=unsafe",
		"-device", "virtio-blk-pci,drive=disk0,bootindex="+diskIndex,
		"-device", "virtio-net-pci,netdev=net0,mac="+c.MAC+",romfile=,bootindex="+netIndex), nil
}

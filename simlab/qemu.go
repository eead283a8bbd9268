package simlab

import "strconv"

// qemuArgs is the QEMU command line of a node booting with boot order
// ("n" = network first, "c" = disk first). The console is fd 3, one end of a
// socketpair held by the relay, so no TCP port and no reconnect is involved.
//
//   - -nographic (with an explicit -serial and -monitor none) makes QEMU tell
//     SeaBIOS to mirror its screen to the serial port ("sercon"), so BIOS,
//     iPXE and syslinux output reaches SOL like BIOS console redirection.
//     Don't add SERIAL to syslinux configs then, or lines print twice.
//   - cache=unsafe: writes stay in the host page cache, which survives the
//     SIGKILL of a power-off; flushes are ignored (fast dd ... conv=fsync).
//   - The NIC is on user-mode networking: the guest is 10.0.2.15, the host's
//     loopback is 10.0.2.2; the DHCP bootfile is a full tftp:// URL, which
//     iPXE fetches from any port (a real NIC ROM would use port 69).
func qemuArgs(c NodeConfig, order string) []string {
	mem := c.MemoryMB
	if mem <= 0 {
		mem = 256
	}
	return []string{
		"-name", "simlab-" + c.Name,
		"-accel", c.Accel,
		"-m", strconv.Itoa(mem),
		"-nographic",
		"-monitor", "none",
		"-chardev", "socket,id=console,fd=3",
		"-serial", "chardev:console",
		"-drive", "file=" + c.Disk + ",if=virtio,format=raw,cache=unsafe",
		"-netdev", "user,id=net0,bootfile=" + c.BootFile,
		"-device", "virtio-net-pci,netdev=net0,mac=" + c.MAC,
		"-boot", "order=" + order,
	}
}

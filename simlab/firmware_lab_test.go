package simlab_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/simlab"
	"github.com/labctl/labctl/simlab/simlabtest"
)

// TestLabUEFIFirmware: nodes on Debian's OVMF, one plain, one with Secure
// Boot, both booting the test disk (shim -> GRUB -> Debian's signed
// kernel) to a shell; the Secure Boot node's kernel reports Secure Boot on,
// the other's off. bootdev pxe with the EFI flag then makes the firmware try
// the network first (bootindex per power-on); without it (a legacy boot
// override) the plain node boots its disk as UEFI-only firmware does. A
// kernel whose signature no longer matches is refused on the Secure Boot
// node.
func TestLabUEFIFirmware(t *testing.T) {
	art := simlabtest.Artifacts(t)
	lab := simlabtest.StartLab(t, 2, simlab.Options{
		DiskImage: art.Images.Raw.Path,
		Firmware:  []string{simlab.FirmwareUEFI, simlab.FirmwareSecureBoot},
	})
	for _, n := range lab.Nodes {
		t.Run(n.Firmware, func(t *testing.T) {
			t.Parallel()
			secure := n.Firmware == simlab.FirmwareSecureBoot
			c := openConsole(t, n)
			ipmi(t, n, "chassis", "bootdev", "disk")
			on := time.Now()
			ipmi(t, n, "power", "on")
			c.expect(`login: `, 5*time.Minute)
			toLogin := time.Since(on)
			c.loginTestOS()
			out := c.run("test -d /sys/firmware/efi && echo EFI-BOOTED; dmesg | grep -o 'Secure boot [a-z]*'", "testos# ", time.Minute)
			if !strings.Contains(out, "EFI-BOOTED") {
				t.Errorf("the test OS was not booted by UEFI: %q", out)
			}
			want := "Secure boot disabled"
			if secure {
				want = "Secure boot enabled"
			}
			if !strings.Contains(out, want) {
				t.Errorf("kernel log: %q, want %q", out, want)
			}
			t.Logf("TIMING %s: power on (disk) -> login prompt %.1fs", n.Firmware, toLogin.Seconds())
			ipmi(t, n, "power", "off")

			// bootdev pxe with the EFI flag: the NIC's boot entries come first.
			ipmi(t, n, "chassis", "bootdev", "pxe", "options=efiboot")
			ipmi(t, n, "power", "on")
			c.expect(`Start PXE over IPv4`, 5*time.Minute)
			if st := status(t, n); !st.BootEFI || !strings.Contains(lastPowerOn(st), "network first") {
				t.Errorf("bootdev pxe options=efiboot: status %+v", st)
			}
			ipmi(t, n, "power", "off")
			if !secure {
				// A legacy (BIOS) network boot override: UEFI-only firmware
				// ignores it and boots its own order, the disk.
				ipmi(t, n, "chassis", "bootdev", "pxe")
				ipmi(t, n, "power", "on")
				c.expect(`login: `, 5*time.Minute)
				if st := status(t, n); st.BootEFI || !strings.Contains(lastPowerOn(st), "UEFI-only firmware ignores it") {
					t.Errorf("legacy bootdev pxe: status %+v", st)
				}
				ipmi(t, n, "power", "off")
				return
			}

			// The same kernel with one byte changed: shim and GRUB refuse it.
			tampered := tamperKernel(t, lab.Artifacts.Images.Raw.Path)
			if err := simlab.CopyFile(tampered, filepath.Join(n.Dir, "disk.img")); err != nil {
				t.Fatal(err)
			}
			ipmi(t, n, "chassis", "bootdev", "disk")
			ipmi(t, n, "power", "on")
			m := c.expect(`(bad shim signature|invalid signature|verification failed|Access Denied)`, 5*time.Minute)
			t.Logf("tampered kernel refused: %q", m[0])
			// GRUB ends a menu entry whose commands failed with "Press any
			// key to continue": seeing it before any login prompt proves the
			// entry did not boot.
			if m := c.expect(`(login: |Press any key to continue)`, 5*time.Minute); m[0] == "login: " {
				t.Error("the tampered kernel booted to a login prompt")
			}
			ipmi(t, n, "power", "off")
		})
	}
}

// tamperKernel returns a copy of the disk image whose /vmlinuz has one byte
// of its code changed (mtools, no mounts): the signature no longer matches.
func tamperKernel(t *testing.T, image string) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := simlab.CopyFile(image, img); err != nil {
		t.Fatal(err)
	}
	part := img + "@@1048576" // the FAT partition starts at 1 MiB
	kernel := filepath.Join(dir, "vmlinuz")
	mtools := func(args ...string) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	mtools("mcopy", "-i", part, "::/vmlinuz", kernel)
	b, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(kernel, b, 0o644); err != nil {
		t.Fatal(err)
	}
	mtools("mcopy", "-o", "-i", part, kernel, "::/vmlinuz")
	return img
}

// lastPowerOn is the node's last power-on event.
func lastPowerOn(st simlab.Status) string {
	for i := len(st.Chassis) - 1; i >= 0; i-- {
		if strings.HasPrefix(st.Chassis[i].Action, "power on") {
			return st.Chassis[i].Action
		}
	}
	return ""
}

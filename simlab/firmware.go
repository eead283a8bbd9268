package simlab

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Node firmware (Options.Firmware, `simlab up --firmware`).
const (
	// FirmwareBIOS is SeaBIOS with the NIC's iPXE ROM (QEMU's default).
	FirmwareBIOS = "bios"
	// FirmwareUEFI is Debian's OVMF without Secure Boot.
	FirmwareUEFI = "uefi"
	// FirmwareHTTPBoot is Debian's OVMF with PXE switched off in its
	// network setup (fw_cfg opt/org.tianocore/IPv4PXESupport and
	// IPv6PXESupport = n), so the NIC boots through the firmware's own UEFI
	// HTTP boot, as on a server set up for HTTP boot.
	FirmwareHTTPBoot = "uefi-httpboot"
	// FirmwareSecureBoot is Debian's OVMF with Secure Boot on and
	// Microsoft's keys enrolled (OVMF_VARS_4M.ms.fd), on q35 with SMM.
	FirmwareSecureBoot = "uefi-secureboot"
)

// ovmfDir is where Debian's ovmf package puts the firmware.
var ovmfDir = "/usr/share/OVMF"

// varsFile is a UEFI node's own copy of the variable store (boot entries,
// Secure Boot keys), in its node directory.
const varsFile = "OVMF_VARS.fd"

// firmware is what QEMU loads for one kind of firmware.
type firmware struct {
	// Code is the read-only firmware volume (pflash unit 0); empty for BIOS.
	Code string
	// Vars is the variable store template copied per node (pflash unit 1).
	Vars string
	// SecureBoot needs q35 with SMM and a secure pflash.
	SecureBoot bool
	// HTTPOnly switches PXE off: the NIC's boot entries are HTTP boot.
	HTTPOnly bool
}

// firmwareFiles returns the files of firmware kind fw, checking they exist.
func firmwareFiles(fw string) (firmware, error) {
	var f firmware
	switch fw {
	case FirmwareBIOS:
		return f, nil
	case FirmwareUEFI:
		f = firmware{Code: "OVMF_CODE_4M.fd", Vars: "OVMF_VARS_4M.fd"}
	case FirmwareHTTPBoot:
		f = firmware{Code: "OVMF_CODE_4M.fd", Vars: "OVMF_VARS_4M.fd", HTTPOnly: true}
	case FirmwareSecureBoot:
		f = firmware{Code: "OVMF_CODE_4M.secboot.fd", Vars: "OVMF_VARS_4M.ms.fd", SecureBoot: true}
	default:
		return f, fmt.Errorf("firmware %q: want %s, %s, %s or %s", fw, FirmwareBIOS, FirmwareUEFI, FirmwareHTTPBoot, FirmwareSecureBoot)
	}
	f.Code = filepath.Join(ovmfDir, f.Code)
	f.Vars = filepath.Join(ovmfDir, f.Vars)
	for _, p := range []string{f.Code, f.Vars} {
		if _, err := os.Stat(p); err != nil {
			return f, fmt.Errorf("%w: firmware %s needs %s (Debian package ovmf)", ErrMissingTool, fw, p)
		}
	}
	return f, nil
}

// copyFile writes a copy of src to dst (mode 0644), replacing dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// firmwareName is fw with the empty default spelled out.
func firmwareName(fw string) string {
	if fw == "" {
		return FirmwareBIOS
	}
	return fw
}

// DeviceTypeFor is the device type `simlab up` gives a node of firmware fw.
func DeviceTypeFor(fw string) string {
	switch fw {
	case FirmwareUEFI:
		return DeviceType + "-uefi"
	case FirmwareHTTPBoot:
		return DeviceType + "-httpboot"
	case FirmwareSecureBoot:
		return DeviceType + "-secureboot"
	}
	return DeviceType
}

// memoryFor is a node's RAM in MiB: mb if set, else 256 on BIOS and 512 on
// UEFI (Debian's GRUB on OVMF fails with "cannot allocate kernel buffer" in
// 256).
func memoryFor(mb int, fw string) int {
	switch {
	case mb > 0:
		return mb
	case fw == FirmwareBIOS || fw == "":
		return 256
	}
	return 512
}

package devices

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/labctl/labctl/internal/tomlfile"
)

// A device type's [boot] table: defaults per firmware, and every
// combination of firmware, method and loader family that cannot boot.
func TestDeviceTypeBoot(t *testing.T) {
	base := func(boot string, efi bool) string {
		return "[bootdev]\nefi = " + map[bool]string{true: "true", false: "false"}[efi] + "\n\n" + boot + `
[master]
kernel = "k/vmlinuz"
initrd = "k/initrd"
prompt = "master# "
disk = "/dev/vda"

[login]
shell_prompt = "# "
`
	}
	good := map[string]struct {
		boot  string
		efi   bool
		want  Boot
		local string
	}{
		"default is BIOS pxelinux": {"", false, bootOf(FirmwareBIOS, BootPXE, LoaderPXELinux, "lpxelinux.0"), "LOCALBOOT 0"},
		"uefi gets iPXE":           {"[boot]\nfirmware = \"uefi\"\n", true, bootOf(FirmwareUEFI, BootPXE, LoaderIPXE, "efi/snponly.efi"), "exit"},
		"uefi grub":                {"[boot]\nfirmware = \"uefi\"\nloader = \"grub\"\n", true, bootOf(FirmwareUEFI, BootPXE, LoaderGRUB, "grubx64.efi"), "exit"},
		"http boot":                {"[boot]\nfirmware = \"uefi\"\nmethod = \"http\"\n", true, bootOf(FirmwareUEFI, BootHTTP, LoaderIPXE, "efi/snponly.efi"), "exit"},
		"secure boot gets shim":    {"[boot]\nfirmware = \"uefi-secureboot\"\n", true, bootOf(FirmwareSecureBoot, BootPXE, LoaderGRUB, "shimx64.efi"), "exit"},
		"bios ipxe":                {"[boot]\nloader = \"ipxe\"\n", false, bootOf(FirmwareBIOS, BootPXE, LoaderIPXE, "undionly.kpxe"), "exit"},
		"uboot has no file":        {"[boot]\nfirmware = \"uboot\"\n", false, bootOf(FirmwareUBoot, BootPXE, LoaderPXELinux, ""), "LOCALBOOT 0"},
		"own file":                 {"[boot]\nfirmware = \"uefi\"\nfile = \"x86/ipxe.efi\"\n", true, bootOf(FirmwareUEFI, BootPXE, LoaderIPXE, "x86/ipxe.efi"), "exit"},
		"a countdown to skip": {"[[boot.skip]]\nprompt = \"Press Ctrl-B for the iPXE command line...\"\nkey = \" \"\n", false,
			Boot{FirmwareBIOS, BootPXE, LoaderPXELinux, "lpxelinux.0", []SkipPrompt{{"Press Ctrl-B for the iPXE command line...", " "}}}, "LOCALBOOT 0"},
	}
	for name, tt := range good {
		t.Run(name, func(t *testing.T) {
			dt, err := ParseDeviceType("dt.toml", []byte(base(tt.boot, tt.efi)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dt.Boot, tt.want) || dt.LocalBoot.Entry != tt.local {
				t.Errorf("boot = %+v, local %q; want %+v, %q", dt.Boot, dt.LocalBoot.Entry, tt.want, tt.local)
			}
		})
	}
	bad := map[string]struct {
		boot string
		efi  bool
		want string
	}{
		"pxelinux on uefi":          {"[boot]\nfirmware = \"uefi\"\nloader = \"pxelinux\"\n", true, `dt.toml:6: boot.loader: loader family "pxelinux" does not run on firmware "uefi" with method "pxe": use ipxe or grub`},
		"ipxe under secure boot":    {"[boot]\nfirmware = \"uefi-secureboot\"\nloader = \"ipxe\"\n", true, `boot.loader: loader family "ipxe" does not run on firmware "uefi-secureboot"`},
		"grub on bios":              {"[boot]\nloader = \"grub\"\n", false, `boot.loader: loader family "grub" does not run on firmware "bios" with method "pxe": use pxelinux or ipxe`},
		"http boot on bios":         {"[boot]\nmethod = \"http\"\n", false, `boot.method: firmware "bios" cannot network-boot with method "http"`},
		"http boot secure boot":     {"[boot]\nfirmware = \"uefi-secureboot\"\nmethod = \"http\"\n", true, `boot.method`},
		"uefi without the efi flag": {"[boot]\nfirmware = \"uefi\"\n", false, `bootdev.efi: false, but boot.firmware is "uefi"`},
		"bios with the efi flag":    {"", true, `bootdev.efi: true, but boot.firmware is "bios"`},
		"file outside the root":     {"[boot]\nfile = \"../lpxelinux.0\"\n", false, `boot.file: "../lpxelinux.0" is not a plain file name`},
		"file with a comma":         {"[boot]\nfile = \"a,b.0\"\n", false, `boot.file: "a,b.0" is not a plain file name`},
		"uboot with a file":         {"[boot]\nfirmware = \"uboot\"\nfile = \"x.0\"\n", false, `boot.file: U-Boot reads pxelinux configs itself`},
		"unknown firmware":          {"[boot]\nfirmware = \"coreboot\"\n", false, `"coreboot" is not a firmware: use "bios" or "uefi" or "uefi-secureboot" or "uboot"`},
		"unknown loader":            {"[boot]\nloader = \"refind\"\n", false, `"refind" is not a boot loader family`},
		"skip without a prompt":     {"[[boot.skip]]\nkey = \" \"\n", false, `dt.toml:4: boot.skip[0].prompt: required`},
		"skip without a key":        {"[[boot.skip]]\nprompt = \"Press ESC\"\n", false, `boot.skip[0].key: "": give one key`},
		"skip with a long key":      {"[[boot.skip]]\nprompt = \"Press ESC\"\nkey = \"123456789\"\n", false, `boot.skip[0].key: "123456789": give one key, 1 to 8 bytes`},
		"skip over two lines":       {"[[boot.skip]]\nprompt = \"a\\nb\"\nkey = \" \"\n", false, `boot.skip[0].prompt: "a\nb" spans lines`},
		"skip a long prompt":        {"[[boot.skip]]\nprompt = \"" + strings.Repeat("x", 201) + "\"\nkey = \" \"\n", false, `boot.skip[0].prompt: 201 bytes: at most 200`},
		"nine countdowns":           {strings.Repeat("[[boot.skip]]\nprompt = \"p\"\nkey = \" \"\n", 9), false, `boot.skip: 9 countdowns: at most 8`},
		"skip is a table array":     {"[boot]\nskip = \"Press ESC\"\n", false, `boot.skip: must be an array of tables`},
	}
	for name, tt := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := ParseDeviceType("dt.toml", []byte(base(tt.boot, tt.efi)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v; want %q", err, tt.want)
			}
		})
	}
}

// bootOf is a [boot] table without countdowns to skip.
func bootOf(fw Firmware, method BootMethod, loader LoaderFamily, file string) Boot {
	return Boot{Firmware: fw, Method: method, Loader: loader, File: file}
}

// The lab's boot root must hold the loader files its devices' types name
// (for Secure Boot also the GRUB shim loads), reported at the type's
// boot.file line, or at the device's override.
func TestCheckBootFiles(t *testing.T) {
	files := fixture()
	files["types/qemu.toml"] = strings.Replace(files["types/qemu.toml"], "[power]", "[bootdev]\nefi = true\n\n[boot]\nfirmware = \"uefi-secureboot\"\nfile = \"shimx64.efi\"\n\n[power]", 1)
	files["devices/n2.toml"] += "boot.firmware = \"uefi\"\nboot.loader = \"ipxe\"\nboot.file = \"efi/ipxe.efi\"\n"
	files["boot/shimx64.efi"] = "shim"
	dir := writeLab(t, files)
	lab, err := Load(filepath.Join(dir, "lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range lab.CheckBootFiles() {
		got = append(got, strings.ReplaceAll(p.String(), dir, "DIR"))
	}
	want := []string{
		"DIR/types/qemu.toml:8: boot.file: grubx64.efi is not in the boot root DIR/boot (firmware uefi-secureboot, loader grub; make master builds a boot root with every loader)",
		"DIR/devices/n2.toml:18: override.boot.file: efi/ipxe.efi is not in the boot root DIR/boot (firmware uefi, loader ipxe; make master builds a boot root with every loader)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if tomlfile.Check(lab.CheckBootFiles()) == nil {
		t.Error("missing loaders are not problems")
	}

	// A lab checked where its boot root is not: one warning.
	files = fixture()
	dir = writeLab(t, files)
	lab, err = Load(filepath.Join(dir, "lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	ps := lab.CheckBootFiles()
	if len(ps) != 1 || !ps[0].Warning || !strings.Contains(ps[0].String(), "boot_server.root: warning: ") {
		t.Errorf("problems = %v; want one warning about the root", ps)
	}
}

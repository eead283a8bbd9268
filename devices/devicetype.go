package devices

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/labctl/labctl/internal/tomlfile"
)

// DeviceType is one device-types/NAME.toml: how to power, boot, reach and
// log in to a kind of machine.
type DeviceType struct {
	// Name is the file name without ".toml"; if the file sets it, it must
	// match.
	Name        string `toml:"name"`
	Description string `toml:"description"`
	Settings
	File string // the file it was loaded from
	// BootFileLine is the line of boot.file in File (or of the nearest
	// [boot] key, 0 if none), for problems found with the lab's boot root.
	BootFileLine int
}

// Settings are the device-type keys. A device's [override] table may
// change any of them. Treat a Settings value as read-only: devices of one
// type share its slices.
type Settings struct {
	Power     Power     `toml:"power"`
	Bootdev   Bootdev   `toml:"bootdev"`
	Boot      Boot      `toml:"boot"`
	Deploy    Deploy    `toml:"deploy"`
	Console   Console   `toml:"console"`
	Master    Master    `toml:"master"`
	LocalBoot LocalBoot `toml:"local_boot"`
	NFS       NFS       `toml:"nfs"`
	Login     Login     `toml:"login"`
	Timeouts  Timeouts  `toml:"timeouts"`
	Health    Health    `toml:"health"`
}

// Power says how to switch a device on and off and choose its next boot
// device.
type Power struct {
	// Method is "ipmi" (labctl talks IPMI itself) or "command" (shell
	// commands, LAVA style: a PDU, a relay, or ipmitool).
	Method PowerMethod `toml:"method"`
	// Interface and CipherSuite are for talking IPMI to the BMC (the ipmi
	// power method, the ipmi console driver, health checks). Interface is
	// "lanplus" (IPMI 2.0, the default) or "lan" (1.5). CipherSuite 0 means
	// negotiate; set 3 for BMCs without SHA256 such as ipmi_sim, where
	// negotiating costs seconds.
	Interface   IPMIInterface `toml:"interface"`
	CipherSuite int           `toml:"cipher_suite"`
	// Cycle is how the node is power-cycled to boot its disk: "cycle"
	// (one cycle request: the BMC keeps the power off for its own minimum
	// time, which is what real hardware needs to reset fully) or "off-on"
	// (power off, confirmed, then power on: no wait for the BMC to act on
	// a cycle, for BMCs that switch at once, such as a simulator's).
	Cycle CycleMode `toml:"cycle"`
	// Retries is how many times a failed power or bootdev operation is
	// tried again; Timeout bounds each try.
	Retries int           `toml:"retries"`
	Timeout time.Duration `toml:"timeout"`

	// For method = "command". on, off and status are required. Without a
	// reset command a reset is off, then on. The node is on when the output
	// of status matches StatusOnRegexp. Without bootdev commands the boot
	// device is not switched: the node must try PXE first, and the
	// local-boot entry of its PXE config sends it on to its disk.
	OnCommand          Command `toml:"on_command"`
	OffCommand         Command `toml:"off_command"`
	ResetCommand       Command `toml:"reset_command"`
	StatusCommand      Command `toml:"status_command"`
	StatusOnRegexp     Pattern `toml:"status_on_regexp"`
	BootdevPXECommand  Command `toml:"bootdev_pxe_command"`
	BootdevDiskCommand Command `toml:"bootdev_disk_command"`
}

// Bootdev are the flags sent with IPMI "set boot device".
type Bootdev struct {
	EFI        bool `toml:"efi"`        // boot in UEFI mode rather than legacy BIOS
	Persistent bool `toml:"persistent"` // for all later boots, not only the next one
}

// Boot says how the device's firmware boots from the network and which
// boot loader the boot server and the DHCP server give it. Unset keys take
// the defaults of the firmware (see [Boot.Defaults]); docs/uefi.md has the
// whole picture.
type Boot struct {
	// Firmware is "bios" (legacy PXE ROM), "uefi", "uefi-secureboot"
	// (UEFI with Secure Boot on: only the signed chain boots) or "uboot"
	// (U-Boot's pxe command: it reads pxelinux configs itself, no loader).
	Firmware Firmware `toml:"firmware"`
	// Method is how the firmware fetches the loader: "pxe" (DHCP + TFTP;
	// client architecture 0 for BIOS, 7 or 9 for x86-64 UEFI) or "http"
	// (UEFI HTTP boot: architecture 16, vendor class HTTPClient, an
	// http:// URL).
	Method BootMethod `toml:"method"`
	// Loader is the family of the loader: "pxelinux", "grub" or "ipxe";
	// it decides which per-node config the boot server writes.
	Loader LoaderFamily `toml:"loader"`
	// File is the loader under the boot root, as DHCP names it, e.g.
	// "lpxelinux.0", "efi/snponly.efi", "shimx64.efi" (which loads
	// grubx64.efi: keep both at the top of the root, see Boot.Files).
	// Empty for uboot.
	File string `toml:"file"`
	// Skip lists the countdowns the firmware shows on the console while
	// it boots (a prompt that waits a few seconds for the key that opens
	// a menu or a shell), each with a key that ends the wait at once and
	// opens nothing. While it waits for the master, login or boot prompt,
	// the dispatcher sends the key as soon as the prompt shows (once per
	// prompt and boot; again while the console stays silent after it).
	Skip []SkipPrompt `toml:"skip"`
}

// SkipPrompt is a firmware countdown and the key that ends it.
type SkipPrompt struct {
	// Prompt is the countdown's text as the console shows it: plain
	// text, not a regexp, on one line.
	Prompt string `toml:"prompt"`
	// Key is what to send: one key (a character or a short escape
	// sequence), never the key that opens what the countdown offers.
	Key string `toml:"key"`
}

// maxEchoWindow bounds console.echo_window: a 16550 UART's FIFO holds 16
// bytes, and a window past what the console buffers only loses input.
const maxEchoWindow = 16

// Limits of boot.skip: a few countdowns per boot, each a short line.
const (
	maxSkipPrompts   = 8
	maxSkipPromptLen = 200
	maxSkipKeyLen    = 8
)

// Deploy says how a written image is checked.
type Deploy struct {
	// Verify is what proves the image: "readback" (after writing, the
	// master reads the image's bytes back from the disk and hashes them:
	// the disk holds the image), "stream" (the master hashes the bytes it
	// receives while it writes them, and labctl checks that the image file
	// it serves holds the job's digest: the image arrived intact and was
	// written without error, but nothing reads the disk back) or "both".
	// An uncompressed image in "stream" mode is read back instead: the
	// node hashes every byte either way, and reading back costs less than
	// busybox tee. A job's deploy.verify overrides it.
	Verify VerifyMode `toml:"verify"`
	// Repack is what a compressed image is served to the master as:
	// "zstd" (a gzip, bzip2 or xz image is repacked into zstd once, on
	// the host, and kept in the cache: zstd unpacks several times faster
	// than gzip, bzip2 or xz on the node's CPU; the master needs zstd, as
	// [save] does, and the host the zstd program) or "none" (as it is:
	// the master needs the image's own decompressor).
	Repack RepackMode `toml:"repack"`
}

// Console says how to reach the serial console and how fast to type on it.
type Console struct {
	// Driver is "command" (ConnectionCommand in a pty, e.g. ipmitool sol
	// activate) or "ipmi" (labctl opens Serial over LAN itself).
	Driver ConsoleDriver `toml:"driver"`
	// ConnectionCommand opens the console; ResetCommand, if set, runs
	// before every connection to end a stale session (ipmitool sol
	// deactivate). Driver "command" only.
	ConnectionCommand Command `toml:"connection_command"`
	ResetCommand      Command `toml:"reset_command"`
	// ReadyRegexp, if set, is what the connection command prints once the
	// console is really connected ("SOL Session operational" for ipmitool):
	// until then the connection has not worked, and a command that exits
	// without printing it is a failed connection, not a session that ended.
	ReadyRegexp Pattern `toml:"ready_regexp"`
	// Pacing is "fixed" (wait the serial delay after every character, as
	// LAVA does) or "echo" (send the next character once the previous one
	// has echoed back, waiting at most EchoTimeout, then falling back to
	// the fixed delay: fast where the console echoes, safe where it does
	// not, e.g. at a password prompt).
	Pacing      PacingMode    `toml:"pacing"`
	EchoTimeout time.Duration `toml:"echo_timeout"`
	// EchoWindow (echo pacing) is how many typed characters may be on
	// their way at once, sent but not yet echoed: 1 sends one at a time;
	// more saves the round trip per character where the console buffers
	// that much input. A line's Enter always waits for every echo. Once
	// the console loses a character, the job types one at a time.
	EchoWindow int `toml:"echo_window"`
	// The serial delays, in milliseconds per character, as LAVA's keys of
	// the same names: BootloaderSerialDelayMs for what is typed before the
	// test OS shell (master initrd, login), TestShellSerialDelayMs for the
	// test steps.
	BootloaderSerialDelayMs int `toml:"bootloader_serial_delay_ms"`
	TestShellSerialDelayMs  int `toml:"test_shell_serial_delay_ms"`
}

// BootloaderDelay is BootloaderSerialDelayMs as a duration.
func (c Console) BootloaderDelay() time.Duration {
	return time.Duration(c.BootloaderSerialDelayMs) * time.Millisecond
}

// TestShellDelay is TestShellSerialDelayMs as a duration.
func (c Console) TestShellDelay() time.Duration {
	return time.Duration(c.TestShellSerialDelayMs) * time.Millisecond
}

// Master is the network-booted image that writes job images to the disk.
type Master struct {
	Kernel string `toml:"kernel"` // relative to the boot server's root
	Initrd string `toml:"initrd"` // relative to the boot server's root
	Append string `toml:"append"` // kernel command line
	Prompt string `toml:"prompt"` // its shell prompt, e.g. "master# "
	// NetworkCommands run at the prompt before the image is fetched (e.g.
	// "udhcpc -i eth0"); none if the master brings the network up itself.
	NetworkCommands []string `toml:"network_commands"`
	Disk            string   `toml:"disk"` // written by jobs that name no deploy.disk
	// ZstdLevel is the zstd level the master compresses saved disks with
	// (1 to 19; default 3): higher levels make smaller images and cost
	// the node's CPU more time.
	ZstdLevel int `toml:"zstd_level"`
}

// LocalBoot is what a node gets from PXE when it should boot its disk.
type LocalBoot struct {
	// Entry is in the language of the boot loader family: for pxelinux the
	// body of a LABEL ("LOCALBOOT 0", or, for boards whose PXE firmware
	// hangs on LOCALBOOT, "COM32 chain.c32\nAPPEND hd0 0"); for GRUB the
	// body of a menuentry, for iPXE script lines. Default: the family's
	// DefaultLocal ("exit" for GRUB and iPXE: back to the firmware, which
	// tries its next boot option).
	Entry string `toml:"entry"`
}

// NFS is how the device's diskless test OS mounts its root over NFS
// (boot.method = "nfs").
type NFS struct {
	// Options are NFS mount options added after the server's own (port,
	// version), e.g. "timeo=600,retrans=2": one word, comma-separated.
	Options string `toml:"options"`
}

// DefaultLocal is the local-boot entry of a loader family.
func (l LoaderFamily) DefaultLocal() string {
	if l == LoaderGRUB || l == LoaderIPXE {
		return "exit"
	}
	return "LOCALBOOT 0"
}

// Login says how to log in to the test OS once it booted from disk.
// Prompts are plain text, not regular expressions.
type Login struct {
	LoginPrompt    string `toml:"login_prompt"`
	PasswordPrompt string `toml:"password_prompt"`
	ShellPrompt    string `toml:"shell_prompt"`
	LoginIncorrect string `toml:"login_incorrect"` // printed on a wrong password: fail at once
}

// Timeouts are the defaults for the steps of a job; a job may set its own.
type Timeouts struct {
	Power      time.Duration `toml:"power"`       // one power or bootdev operation, confirmed
	MasterBoot time.Duration `toml:"master_boot"` // power on to the master prompt
	Deploy     time.Duration `toml:"deploy"`      // the whole deploy action
	DiskBoot   time.Duration `toml:"disk_boot"`   // power cycle to the login prompt
	Login      time.Duration `toml:"login"`       // login prompt to shell prompt
	TestStep   time.Duration `toml:"test_step"`   // one test step
	Job        time.Duration `toml:"job"`         // the whole job
}

// Health says what the health check of a device does. It always checks
// that the BMC answers and the power state can be read.
type Health struct {
	Console    bool `toml:"console"`     // also open the console (default true)
	MasterBoot bool `toml:"master_boot"` // also boot the master image to its prompt, then power off
}

// The enumerations of the device-type keys.
type (
	PowerMethod   string
	Firmware      string
	BootMethod    string
	LoaderFamily  string
	ConsoleDriver string
	PacingMode    string
	IPMIInterface string
	CycleMode     string
	VerifyMode    string
	RepackMode    string
)

// Their values.
const (
	FirmwareBIOS       Firmware      = "bios"
	FirmwareUEFI       Firmware      = "uefi"
	FirmwareSecureBoot Firmware      = "uefi-secureboot"
	FirmwareUBoot      Firmware      = "uboot"
	BootPXE            BootMethod    = "pxe"
	BootHTTP           BootMethod    = "http"
	LoaderPXELinux     LoaderFamily  = "pxelinux"
	LoaderGRUB         LoaderFamily  = "grub"
	LoaderIPXE         LoaderFamily  = "ipxe"
	PowerIPMI          PowerMethod   = "ipmi"
	PowerCommand       PowerMethod   = "command"
	ConsoleIPMI        ConsoleDriver = "ipmi"
	ConsoleCmd         ConsoleDriver = "command"
	PacingFixed        PacingMode    = "fixed"
	PacingEcho         PacingMode    = "echo"
	LANPlus            IPMIInterface = "lanplus"
	LAN                IPMIInterface = "lan"
	CycleBMC           CycleMode     = "cycle"
	CycleOffOn         CycleMode     = "off-on"
	VerifyReadback     VerifyMode    = "readback"
	VerifyStream       VerifyMode    = "stream"
	VerifyBoth         VerifyMode    = "both"
	RepackNone         RepackMode    = "none"
	RepackZstd         RepackMode    = "zstd"
)

// Stream reports whether m hashes the image on its way to the disk.
func (m VerifyMode) Stream() bool { return m == VerifyStream || m == VerifyBoth }

// Readback reports whether m reads the written image back from the disk.
func (m VerifyMode) Readback() bool { return m == VerifyReadback || m == VerifyBoth }

func (m *PowerMethod) UnmarshalText(b []byte) error {
	return unmarshalEnum(m, b, "power method", PowerIPMI, PowerCommand)
}

func (f *Firmware) UnmarshalText(b []byte) error {
	return unmarshalEnum(f, b, "firmware", FirmwareBIOS, FirmwareUEFI, FirmwareSecureBoot, FirmwareUBoot)
}

func (m *BootMethod) UnmarshalText(b []byte) error {
	return unmarshalEnum(m, b, "network boot method", BootPXE, BootHTTP)
}

func (l *LoaderFamily) UnmarshalText(b []byte) error {
	return unmarshalEnum(l, b, "boot loader family", LoaderPXELinux, LoaderGRUB, LoaderIPXE)
}

// UEFI reports whether f is a UEFI firmware.
func (f Firmware) UEFI() bool { return f == FirmwareUEFI || f == FirmwareSecureBoot }

// loaderRule is one firmware, method and loader family that work
// together, and the loader file a device type gets when it names none.
type loaderRule struct {
	firmware Firmware
	method   BootMethod
	loader   LoaderFamily
	file     string
}

// loaderRules are the combinations labctl supports, the first of each
// firmware and method being its default loader. Why these: docs/uefi.md.
var loaderRules = []loaderRule{
	{FirmwareBIOS, BootPXE, LoaderPXELinux, "lpxelinux.0"},
	{FirmwareBIOS, BootPXE, LoaderIPXE, "undionly.kpxe"},
	{FirmwareUEFI, BootPXE, LoaderIPXE, "efi/snponly.efi"},
	{FirmwareUEFI, BootPXE, LoaderGRUB, "grubx64.efi"},
	{FirmwareUEFI, BootHTTP, LoaderIPXE, "efi/snponly.efi"},
	{FirmwareSecureBoot, BootPXE, LoaderGRUB, "shimx64.efi"},
	{FirmwareUBoot, BootPXE, LoaderPXELinux, ""},
}

// ShimNext is the file shim loads next: GRUB.
const ShimNext = "grubx64.efi"

// Defaults fills in the keys left unset from the firmware's defaults.
func (b *Boot) Defaults() {
	if b.Firmware == "" {
		b.Firmware = FirmwareBIOS
	}
	if b.Method == "" {
		b.Method = BootPXE
	}
	for _, r := range loaderRules {
		if r.firmware == b.Firmware && r.method == b.Method && (b.Loader == "" || b.Loader == r.loader) {
			if b.Loader == "" {
				b.Loader = r.loader
			}
			if b.File == "" {
				b.File = r.file
			}
			return
		}
	}
}

// Files lists the files the loader needs under the boot root: File, and
// for Secure Boot the GRUB that shim loads. Shim asks for it beside itself
// when the PXE stack tells it its own path (iPXE), but at the top of the
// TFTP root under OVMF's PXE: both must be there (the same file when shim
// is at the top).
func (b Boot) Files() []string {
	if b.File == "" {
		return nil
	}
	files := []string{b.File}
	if b.Firmware == FirmwareSecureBoot {
		for _, f := range []string{filepath.ToSlash(filepath.Join(filepath.Dir(b.File), ShimNext)), ShimNext} {
			if !slices.Contains(files, f) {
				files = append(files, f)
			}
		}
	}
	return files
}

// check reports a loader family that the firmware cannot run, a method
// the firmware does not have, and a bad file name.
func (b Boot) check(problem problemf, bootdevEFI bool) {
	ok, methodOK := false, false
	var loaders []string
	for _, r := range loaderRules {
		if r.firmware == b.Firmware && r.method == b.Method {
			methodOK = true
			loaders = append(loaders, string(r.loader))
			ok = ok || r.loader == b.Loader
		}
	}
	switch {
	case !methodOK:
		problem("boot.method", "firmware %q cannot network-boot with method %q", b.Firmware, b.Method)
		return
	case !ok:
		problem("boot.loader", "loader family %q does not run on firmware %q with method %q: use %s",
			b.Loader, b.Firmware, b.Method, strings.Join(loaders, " or "))
		return
	}
	switch {
	case b.Firmware == FirmwareUBoot && b.File != "":
		problem("boot.file", "U-Boot reads pxelinux configs itself: no loader file")
	case b.Firmware != FirmwareUBoot && b.File == "":
		problem("boot.file", "required: the loader under the boot root")
	case b.File != "" && (!filepath.IsLocal(b.File) || strings.ContainsAny(b.File, " \t\r\n,;#\"'\\$") || strings.Contains(b.File, "\\")):
		problem("boot.file", "%q is not a plain file name under the boot root", b.File)
	}
	if len(b.Skip) > maxSkipPrompts {
		problem("boot.skip", "%d countdowns: at most %d", len(b.Skip), maxSkipPrompts)
	}
	for i, sk := range b.Skip {
		key := fmt.Sprintf("boot.skip[%d]", i)
		switch {
		case strings.TrimSpace(sk.Prompt) == "":
			problem(key+".prompt", "required: the countdown's text as the console shows it")
		case len(sk.Prompt) > maxSkipPromptLen:
			problem(key+".prompt", "%d bytes: at most %d (one line of the console)", len(sk.Prompt), maxSkipPromptLen)
		case strings.ContainsAny(sk.Prompt, "\r\n"):
			problem(key+".prompt", "%q spans lines: give the line that waits", sk.Prompt)
		}
		if sk.Key == "" || len(sk.Key) > maxSkipKeyLen {
			problem(key+".key", "%q: give one key, 1 to %d bytes (e.g. \" \" or \"\\u001b\" for Escape)", sk.Key, maxSkipKeyLen)
		}
	}
	if b.Firmware.UEFI() && !bootdevEFI {
		problem("bootdev.efi", "false, but boot.firmware is %q: the BMC would ask for a legacy BIOS boot", b.Firmware)
	} else if b.Firmware == FirmwareBIOS && bootdevEFI {
		problem("bootdev.efi", "true, but boot.firmware is %q: the BMC would ask for a UEFI boot", b.Firmware)
	}
}

func (d *ConsoleDriver) UnmarshalText(b []byte) error {
	return unmarshalEnum(d, b, "console driver", ConsoleCmd, ConsoleIPMI)
}

func (p *PacingMode) UnmarshalText(b []byte) error {
	return unmarshalEnum(p, b, "pacing mode", PacingFixed, PacingEcho)
}

func (i *IPMIInterface) UnmarshalText(b []byte) error {
	return unmarshalEnum(i, b, "IPMI interface", LANPlus, LAN)
}

func (m *CycleMode) UnmarshalText(b []byte) error {
	return unmarshalEnum(m, b, "power cycle mode", CycleBMC, CycleOffOn)
}

func (m *VerifyMode) UnmarshalText(b []byte) error {
	return unmarshalEnum(m, b, "verify mode", VerifyReadback, VerifyStream, VerifyBoth)
}

func (m *RepackMode) UnmarshalText(b []byte) error {
	return unmarshalEnum(m, b, "repack mode", RepackNone, RepackZstd)
}

func unmarshalEnum[T ~string](dst *T, text []byte, what string, values ...T) error {
	for _, v := range values {
		if string(text) == string(v) {
			*dst = v
			return nil
		}
	}
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = fmt.Sprintf("%q", string(v))
	}
	return fmt.Errorf("%q is not a %s: use %s", text, what, strings.Join(quoted, " or "))
}

// DefaultSettings are the values of the keys a device type leaves out.
func DefaultSettings() Settings {
	return Settings{
		Power: Power{
			Method:         PowerIPMI,
			Interface:      LANPlus,
			Cycle:          CycleBMC,
			Retries:        3,
			Timeout:        2 * time.Second,
			StatusOnRegexp: mustPattern(`(?i)\bon\b`), // ipmitool: "Chassis Power is on"
		},
		Deploy: Deploy{Verify: VerifyReadback, Repack: RepackNone},
		Console: Console{
			Driver:      ConsoleIPMI,
			Pacing:      PacingFixed,
			EchoTimeout: 250 * time.Millisecond,
			EchoWindow:  1,
		},
		Master: Master{ZstdLevel: 3},
		// LocalBoot.Entry: set by validate from the loader family.
		Login: Login{
			LoginPrompt:    "login: ",
			PasswordPrompt: "Password: ",
			LoginIncorrect: "Login incorrect",
		},
		Timeouts: Timeouts{
			Power:      time.Minute,
			MasterBoot: 4 * time.Minute,
			Deploy:     10 * time.Minute,
			DiskBoot:   4 * time.Minute,
			Login:      time.Minute,
			TestStep:   5 * time.Minute,
			Job:        time.Hour,
		},
		Health: Health{Console: true},
	}
}

// LoadDeviceType reads and checks one device-type file.
func LoadDeviceType(path string) (*DeviceType, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read device type: %w", err)
	}
	return ParseDeviceType(path, data)
}

// ParseDeviceType decodes and checks a device type; file names it in
// problems and gives its name.
func ParseDeviceType(file string, data []byte) (*DeviceType, error) {
	dt := &DeviceType{Settings: DefaultSettings(), File: file}
	doc, err := tomlfile.Decode(file, data, dt)
	if err != nil {
		return nil, err
	}
	checkFileName(doc, "device type", &dt.Name)
	dt.Settings.validate(doc.Problemf)
	dt.BootFileLine = doc.Line("boot.file")
	if err := doc.Err(); err != nil {
		return nil, err
	}
	return dt, nil
}

// checkFileName defaults *name to the file name without ".toml" and checks
// that a name set in the file matches it.
func checkFileName(doc *tomlfile.Document, what string, name *string) {
	base := strings.TrimSuffix(filepath.Base(doc.File()), ".toml")
	switch {
	case *name == "":
		*name = base
	case *name != base:
		doc.Problemf("name", "%s %q must be in a file named %s.toml", what, *name, *name)
		return
	}
	if !tomlfile.ValidName(*name) {
		doc.Problemf("name", "%q is not a valid name: use %s", *name, tomlfile.NameRule)
	}
}

// problemf records a problem with a key; validation is written against it
// so that the same checks serve a device-type file and a device's override.
type problemf func(key, format string, args ...any)

var (
	// nfsOptions are NFS mount options that are safe on a kernel command
	// line.
	nfsOptions  = regexp.MustCompile(`^[A-Za-z0-9_.=-]+(,[A-Za-z0-9_.=-]+)*$`)
	diskPath    = regexp.MustCompile(`^/dev/[A-Za-z0-9/_.:-]+$`)
	cipherSuite = []int{0, 1, 2, 3, 6, 7, 8, 11, 12, 15, 16, 17}
)

func (s *Settings) validate(problem problemf) {
	p := &s.Power
	commands := s.commands()
	switch p.Method {
	case PowerIPMI:
		for key, c := range commands {
			if strings.HasPrefix(key, "power.") && !c.IsZero() {
				problem(key, `only used with method = "command"`)
			}
		}
	case PowerCommand:
		for _, key := range []string{"power.on_command", "power.off_command", "power.status_command"} {
			if commands[key].IsZero() {
				problem(key, `required with method = "command"`)
			}
		}
		if p.StatusOnRegexp.String() == "" {
			problem("power.status_on_regexp", `required with method = "command"`)
		}
	}
	if !slices.Contains(cipherSuite, p.CipherSuite) {
		problem("power.cipher_suite", "%d is not an IPMI cipher suite (0 to 3, 6 to 8, 11, 12, 15 to 17)", p.CipherSuite)
	}
	if p.Retries < 0 || p.Retries > 10 {
		problem("power.retries", "must be between 0 and 10")
	}
	positive(problem, "power.timeout", p.Timeout)

	c := &s.Console
	switch c.Driver {
	case ConsoleCmd:
		if c.ConnectionCommand.IsZero() {
			problem("console.connection_command", `required with driver = "command"`)
		}
	}
	// With driver = "ipmi" the commands are unused but allowed: a device
	// type keeps its ipmitool fallback, and a device may switch drivers in
	// its [override].
	for key, ms := range map[string]int{"bootloader_serial_delay_ms": c.BootloaderSerialDelayMs, "test_shell_serial_delay_ms": c.TestShellSerialDelayMs} {
		if ms < 0 || ms > 10000 {
			problem("console."+key, "must be between 0 and 10000 (milliseconds per character)")
		}
	}
	positive(problem, "console.echo_timeout", c.EchoTimeout)
	if c.EchoWindow < 1 || c.EchoWindow > maxEchoWindow {
		problem("console.echo_window", "%d: give 1 to %d (characters on their way at once)", c.EchoWindow, maxEchoWindow)
	}

	m := &s.Master
	if m.ZstdLevel < 1 || m.ZstdLevel > 19 {
		problem("master.zstd_level", "%d: give 1 to 19", m.ZstdLevel)
	}
	for key, path := range map[string]string{"kernel": m.Kernel, "initrd": m.Initrd} {
		switch {
		case path == "":
			problem("master."+key, "required: a path relative to the boot server's root")
		case !filepath.IsLocal(path):
			problem("master."+key, "%q must be a path inside the boot server's root", path)
		}
	}
	if m.Prompt == "" {
		problem("master.prompt", "required: the master image's shell prompt")
	}
	switch {
	case m.Disk == "":
		problem("master.disk", "required: the disk that images are written to, e.g. /dev/sda")
	case !diskPath.MatchString(m.Disk):
		problem("master.disk", "%q is not a device node such as /dev/sda", m.Disk)
	}
	for i, cmd := range m.NetworkCommands {
		if strings.TrimSpace(cmd) == "" || strings.ContainsAny(cmd, "\r\n") {
			problem(fmt.Sprintf("master.network_commands[%d]", i), "must be one non-empty line")
		}
	}
	s.Boot.Defaults()
	s.Boot.check(problem, s.Bootdev.EFI)
	if strings.TrimSpace(s.LocalBoot.Entry) == "" {
		s.LocalBoot.Entry = s.Boot.Loader.DefaultLocal()
	}
	if o := s.NFS.Options; o != "" && !nfsOptions.MatchString(o) {
		problem("nfs.options", "%q: want comma-separated mount options such as \"timeo=600,retrans=2\" (letters, digits, =._-)", o)
	}
	if s.Login.LoginPrompt == "" {
		problem("login.login_prompt", "required")
	}
	if s.Login.ShellPrompt == "" {
		problem("login.shell_prompt", "required: the test OS's shell prompt after login")
	}
	t := &s.Timeouts
	for key, d := range map[string]time.Duration{"power": t.Power, "master_boot": t.MasterBoot, "deploy": t.Deploy,
		"disk_boot": t.DiskBoot, "login": t.Login, "test_step": t.TestStep, "job": t.Job} {
		positive(problem, "timeouts."+key, d)
	}
}

func positive(problem problemf, key string, d time.Duration) {
	if d <= 0 {
		problem(key, "must be positive")
	}
}

// commands returns the commands of s by key path, for checks that apply
// to all of them.
func (s *Settings) commands() map[string]Command {
	return map[string]Command{
		"power.on_command":           s.Power.OnCommand,
		"power.off_command":          s.Power.OffCommand,
		"power.reset_command":        s.Power.ResetCommand,
		"power.status_command":       s.Power.StatusCommand,
		"power.bootdev_pxe_command":  s.Power.BootdevPXECommand,
		"power.bootdev_disk_command": s.Power.BootdevDiskCommand,
		"console.connection_command": s.Console.ConnectionCommand,
		"console.reset_command":      s.Console.ResetCommand,
	}
}

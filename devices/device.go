package devices

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/labctl/labctl/internal/tomlfile"
)

// Device is one devices/NAME.toml: a machine in the lab.
type Device struct {
	// Name is the file name without ".toml"; if the file sets it, it must
	// match.
	Name       string   `toml:"name"`
	DeviceType string   `toml:"device_type"`
	Tags       []string `toml:"tags"`
	// MAC is the address the node PXE-boots from; IP, if set, is the
	// address DHCP gives it (for hex-IP pxelinux names and DHCP configs).
	MAC MAC        `toml:"mac"`
	IP  netip.Addr `toml:"ip"`
	BMC BMC        `toml:"bmc"`
	// Override holds device-type keys that differ for this device, in the
	// same tables ([override] console.test_shell_serial_delay_ms = 100).
	Override tomlfile.Table `toml:"override"`

	// Settings are the device type's settings with the overrides applied.
	// For a device checked without its device type they are the defaults.
	Settings Settings
	File     string // the file it was loaded from
	// bootFileLine is the line of the override's boot.file (or of the
	// override), for problems found with the lab's boot root.
	bootFileLine int
}

// BMC is how to reach the device's baseboard management controller.
type BMC struct {
	Host string `toml:"host"`
	Port int    `toml:"port"` // 623 if left out
	User string `toml:"user"`
	// The password comes from a file (relative to the device file; made
	// absolute when loaded) or an environment variable, read when needed:
	// see [Device.Password].
	PasswordFile string `toml:"password_file"`
	PasswordEnv  string `toml:"password_env"`
}

// Password reads the BMC password from the device's password file or
// environment variable.
func (d *Device) Password() (Secret, error) {
	s, err := readSecret(d.BMC.PasswordFile, d.BMC.PasswordEnv)
	if err != nil {
		return Secret{}, fmt.Errorf("device %s: bmc password: %w", d.Name, err)
	}
	return s, nil
}

// Argv fills in a command for this device (see [Command]) and returns the
// program and its arguments, ready for exec.
func (d *Device) Argv(c Command) ([]string, error) {
	argv, err := c.argv(commandData{
		Name:         d.Name,
		Host:         d.BMC.Host,
		Port:         d.BMC.Port,
		User:         d.BMC.User,
		PasswordFile: d.BMC.PasswordFile,
		MAC:          d.MAC.String(),
		IP:           ipString(d.IP),
	})
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", d.Name, err)
	}
	return argv, nil
}

func ipString(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	return ip.String()
}

// HasTags reports whether the device has every one of tags.
func (d *Device) HasTags(tags []string) bool {
	for _, t := range tags {
		if !slices.Contains(d.Tags, t) {
			return false
		}
	}
	return true
}

// LoadDevice reads and checks one device file. With the lab's device types
// the device type must exist, and the overrides are applied and checked
// together with it; with types == nil the device is checked on its own
// (its override keys only against the schema).
func LoadDevice(path string, types map[string]*DeviceType) (*Device, []tomlfile.Problem, error) {
	d, doc, err := parseDevice(path, types)
	if err != nil {
		return nil, nil, err
	}
	if err := doc.Err(); err != nil {
		return nil, nil, err
	}
	return d, doc.Problems(), nil
}

// parseDevice reads a device file; problems are left in the document, so
// that a lab can add its own (duplicate MACs) at the right lines.
func parseDevice(path string, types map[string]*DeviceType) (*Device, *tomlfile.Document, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read device: %w", err)
	}
	d := &Device{BMC: BMC{Port: 623}, File: path}
	doc, err := tomlfile.Decode(path, data, d)
	if err != nil {
		return nil, nil, err
	}
	checkFileName(doc, "device", &d.Name)
	d.validate(doc)

	dt, known := types[d.DeviceType]
	switch {
	case types == nil:
		d.Settings = DefaultSettings()
		doc.DecodeTable(d.Override, &d.Settings) // keys and types only
	case !known:
		if tomlfile.ValidName(d.DeviceType) {
			names := strings.Join(sortedKeys(types), ", ")
			if names == "" {
				names = "none"
			}
			doc.Problemf("device_type", "unknown device type %q (known: %s)", d.DeviceType, names)
		}
	case dt == nil:
		// The device type has problems of its own, reported with it.
	default:
		d.Settings = dt.Settings
		before := len(doc.Problems())
		doc.DecodeTable(d.Override, &d.Settings)
		if len(doc.Problems()) == before && d.Override.IsSet() {
			d.Settings.validate(func(key, format string, args ...any) {
				doc.Problemf(d.Override.Key()+"."+key, format, args...)
			})
		}
		d.checkPasswordFileUse(doc)
		d.bootFileLine = doc.Line(d.Override.Key() + ".boot.file")
	}
	return d, doc, nil
}

func (d *Device) validate(doc *tomlfile.Document) {
	if d.DeviceType == "" {
		doc.Problemf("device_type", "required")
	} else if !tomlfile.ValidName(d.DeviceType) {
		doc.Problemf("device_type", "%q is not a valid name: use %s", d.DeviceType, tomlfile.NameRule)
	}
	for i, tag := range d.Tags {
		key := fmt.Sprintf("tags[%d]", i)
		switch {
		case !tomlfile.ValidName(tag):
			doc.Problemf(key, "%q is not a valid tag: use %s", tag, tomlfile.NameRule)
		case slices.Contains(d.Tags[:i], tag):
			doc.Problemf(key, "%q is listed twice", tag)
		}
	}
	if d.MAC == nil {
		doc.Problemf("mac", "required: the MAC address the node PXE-boots from")
	}
	b := &d.BMC
	switch {
	case b.Host == "":
		doc.Problemf("bmc.host", "required")
	case strings.ContainsAny(b.Host, " \t\r\n'\"\\/"):
		doc.Problemf("bmc.host", "%q is not a host name or address", b.Host)
	}
	if b.Port < 1 || b.Port > 65535 {
		doc.Problemf("bmc.port", "%d is not a port (1 to 65535)", b.Port)
	}
	if b.User == "" || strings.ContainsAny(b.User, "\r\n") {
		doc.Problemf("bmc.user", "required: the BMC user name")
	}
	checkSecretSource(doc, "bmc", "password", absDir(d.File), &b.PasswordFile, b.PasswordEnv, "required: a password_file or a password_env")
}

// checkPasswordFileUse: a command that reads {{.PasswordFile}} needs a
// device whose password is in a file.
func (d *Device) checkPasswordFileUse(doc *tomlfile.Document) {
	if d.BMC.PasswordFile != "" {
		return
	}
	commands := d.Settings.commands()
	for _, key := range sortedKeys(commands) {
		if commands[key].usesPasswordFile() {
			doc.Problemf("bmc.password_env", "%s reads the password from {{.PasswordFile}}: give a password_file", key)
			return
		}
	}
}

// checkSecretFile checks that a password or token file exists, and warns
// if any user can read it.
func checkSecretFile(doc *tomlfile.Document, key, path string) {
	info, err := os.Stat(path)
	switch {
	case err != nil:
		doc.Problemf(key, "%v", err)
	case !info.Mode().IsRegular():
		doc.Problemf(key, "%s is not a regular file", path)
	case info.Mode().Perm()&0o004 != 0:
		doc.Warnf(key, "%s can be read by every user (mode %04o): chmod o-r it", path, info.Mode().Perm())
	}
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func absDir(file string) string {
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return filepath.Dir(file)
	}
	return dir
}

// MAC is an Ethernet (EUI-48) address, written "52:54:00:12:34:56".
type MAC net.HardwareAddr

// UnmarshalText accepts an EUI-48 unicast address in any form that
// net.ParseMAC does.
func (m *MAC) UnmarshalText(text []byte) error {
	hw, err := net.ParseMAC(string(text))
	switch {
	case err != nil || len(hw) != 6:
		return fmt.Errorf("%q is not a MAC address such as 52:54:00:12:34:56", text)
	case hw[0]&1 == 1:
		return fmt.Errorf("%s is a multicast address, not a network card's", hw)
	}
	*m = MAC(hw)
	return nil
}

// MarshalText returns the address in the form "52:54:00:12:34:56".
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// String returns the address in the form "52:54:00:12:34:56".
func (m MAC) String() string { return net.HardwareAddr(m).String() }

// Secret is a password or token held in memory. It never prints: fmt,
// log/slog and JSON all show "[redacted]"; only [Secret.Reveal] returns it.
type Secret struct {
	value *string // a pointer, so that even %+v of a struct holding a Secret shows no text
}

const redacted = "[redacted]"

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{value: &s} }

// Reveal returns the secret, for the one place that must send it.
func (s Secret) Reveal() string {
	if s.value == nil {
		return ""
	}
	return *s.value
}

// String returns "[redacted]".
func (s Secret) String() string { return redacted }

// GoString returns "[redacted]", for %#v.
func (s Secret) GoString() string { return redacted }

// LogValue returns "[redacted]", for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "[redacted]", for JSON and TOML encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// readSecret reads a secret from a file (its first line) or an environment
// variable; errors name the file or variable, never the content.
func readSecret(file, env string) (Secret, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return Secret{}, err
		}
		line, _, _ := strings.Cut(string(data), "\n")
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			return Secret{}, fmt.Errorf("%s: the first line is empty", file)
		}
		return NewSecret(line), nil
	}
	if env == "" {
		return Secret{}, fmt.Errorf("no file or environment variable given")
	}
	value, ok := os.LookupEnv(env)
	if !ok || value == "" {
		return Secret{}, fmt.Errorf("environment variable %s is not set", env)
	}
	return NewSecret(value), nil
}

package devices

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/labctl/labctl/internal/tomlfile"
)

// FuzzLoadLab: no lab file crashes the loader, and a lab it accepts has
// absolute paths, addresses that parse, and unique, sorted devices.
func FuzzLoadLab(f *testing.F) {
	files := fixture()
	f.Add([]byte(files["lab.toml"]))
	f.Add([]byte(files["lab.toml"] + "state_dir = \"/var/lib/labctl\"\n[server]\nlisten = \":8470\"\ntls = \"self-signed\"\n" +
		"[[server.tokens]]\nname = \"ci\"\nrole = \"submitter\"\ntoken_env = \"CI_TOKEN\"\n"))
	f.Add([]byte(files["lab.toml"] + "[server]\ntls_cert = \"c.pem\"\n[[server.tokens]]\nname = \"ci\"\nrole = \"root\"\n"))
	f.Add([]byte("name = \"x\"\ndevice_types = [\"types\", \"types\"]\ndevices = [\"devices\", \"types\"]\n" +
		"[boot_server]\nroot = \"/\"\ntftp_listen = \"[::1]:69\"\nhttp_listen = \":99999\"\nhttp_url = \"https://[::1]\"\n"))
	dir := writeLabTB(f, files)
	lab := filepath.Join(dir, "lab.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(lab, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := Load(lab)
		if err != nil {
			checkProblems(t, lab, err)
			return
		}
		c := l.Config
		if !tomlfile.ValidName(c.Name) {
			t.Errorf("accepted lab name %q", c.Name)
		}
		if !filepath.IsAbs(c.StateDir) || !filepath.IsAbs(c.BootServer.Root) {
			t.Errorf("state_dir %q or boot_server.root %q is not absolute", c.StateDir, c.BootServer.Root)
		}
		if !validHost(c.BootServer.TFTPServer) {
			t.Errorf("tftp_server %q accepted", c.BootServer.TFTPServer)
		}
		for _, tok := range c.Server.Tokens {
			if !tomlfile.ValidName(tok.Name) || !tok.Role.Allows(tok.Role) || (tok.TokenFile == "") == (tok.TokenEnv == "") {
				t.Errorf("accepted token %+v", tok)
			}
			if tok.TokenFile != "" && !filepath.IsAbs(tok.TokenFile) {
				t.Errorf("token file %q is not absolute", tok.TokenFile)
			}
		}
		if !slices.IsSortedFunc(l.Devices, func(a, b *Device) int { return strings.Compare(a.Name, b.Name) }) {
			t.Error("devices not sorted by name")
		}
		for i, d := range l.Devices {
			if i > 0 && l.Devices[i-1].Name == d.Name {
				t.Errorf("device %q twice", d.Name)
			}
			if l.DeviceTypes[d.DeviceType] == nil {
				t.Errorf("device %q of unknown type %q", d.Name, d.DeviceType)
			}
		}
	})
}

// FuzzLoadDevice: no device file crashes the loader, and a device it
// accepts (with the lab's device types) is complete: a MAC, a BMC with a
// port and a user, a password source, and the settings of a known type.
func FuzzLoadDevice(f *testing.F) {
	files := fixture()
	f.Add([]byte(files["devices/n1.toml"]))
	f.Add([]byte(files["devices/n2.toml"]))
	f.Add([]byte("device_type = \"qemu\"\nmac = \"52:54:00:00:00:01\"\ntags = [\"a\", \"a\"]\n[bmc]\nhost = \"h\"\nport = 0\nuser = \"u\"\n" +
		"password_env = \"1X\"\n[override]\nconsole.connection_command = \"sh -c '{{.PasswordFile}}'\"\n"))
	f.Add([]byte("device_type = \"qemu\"\nmac = \"52:54:00:00:00:01:02:03\"\nip = \"::1\"\n[bmc]\nhost = \"h\"\nuser = \"u\"\npassword_file = \"/dev/null\"\n" +
		"[override]\nmaster = 1\ntimeouts.job = \"-1s\"\n"))
	dir := writeLabTB(f, files)
	types, err := LoadDeviceTypes(filepath.Join(dir, "types"))
	if err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(dir, "devices", "n1.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		d, _, err := LoadDevice(path, types)
		if err != nil {
			checkProblems(t, path, err)
			return
		}
		if d.Name != "n1" || types[d.DeviceType] == nil {
			t.Errorf("accepted name %q, device type %q", d.Name, d.DeviceType)
		}
		if len(d.MAC) == 0 || d.BMC.Host == "" || d.BMC.User == "" || d.BMC.Port < 1 || d.BMC.Port > 65535 {
			t.Errorf("accepted mac %v, bmc %+v", d.MAC, d.BMC)
		}
		if (d.BMC.PasswordFile == "") == (d.BMC.PasswordEnv == "") || d.BMC.PasswordFile != "" && !filepath.IsAbs(d.BMC.PasswordFile) {
			t.Errorf("accepted password source %+v", d.BMC)
		}
		for i, tag := range d.Tags {
			if !tomlfile.ValidName(tag) || slices.Contains(d.Tags[:i], tag) {
				t.Errorf("accepted tags %q", d.Tags)
			}
		}
		s := d.Settings
		if s.Master.Kernel == "" || s.Master.Disk == "" || s.Login.ShellPrompt == "" || s.Timeouts.Job <= 0 {
			t.Errorf("accepted incomplete settings: %+v", s)
		}
	})
}

// FuzzSplitWords checks the command-line splitter of device-type commands:
// no text crashes it, and the words it finds, each quoted again, split
// back into the same words. A command it accepts fills in to an argv with
// a program name.
func FuzzSplitWords(f *testing.F) {
	for _, s := range []string{
		"ipmitool -I lanplus -H {{.Host}} -p {{.Port}} -U {{.User}} -E sol activate",
		`sh -c 'echo "a b" \'x'`, `a "b\"c\\d\$e" '' ""`, "{{.Host}}x{{ \"a b\" }}", "a\\", "a 'b", "x|y", "{{",
		"ipmitool -P x", "{{.Password}}", "{{.Nope}}", "''",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := splitWords(s)
		// A word holding "{{" (written {\{) reads as a template however
		// it is quoted: only the others must survive quoting.
		if err == nil && !strings.Contains(s, "{{") && !strings.Contains(strings.Join(words, " "), "{{") {
			quoted := make([]string, len(words))
			for i, w := range words {
				quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
			}
			again, err := splitWords(strings.Join(quoted, " "))
			if err != nil || !slices.Equal(again, words) {
				t.Fatalf("%q: words %q, quoted %q split into %q, %v", s, words, quoted, again, err)
			}
		}
		var c Command
		if err := c.UnmarshalText([]byte(s)); err != nil || c.IsZero() {
			return
		}
		argv, err := c.argv(sampleData())
		if err != nil || len(argv) == 0 || argv[0] == "" {
			t.Fatalf("%q accepted, but fills in to %q, %v", s, argv, err)
		}
		if c.String() != s {
			t.Fatalf("%q reads back as %q", s, c.String())
		}
	})
}

// checkProblems checks that every problem a loader reports about file
// names a file and a line in it.
func checkProblems(t *testing.T, file string, err error) {
	t.Helper()
	for _, p := range tomlfile.Problems(file, err) {
		if p.File == "" || p.Line < 0 {
			t.Errorf("problem without a file: %q", p)
		}
	}
}

// writeLabTB writes files under a new directory and returns its path.
func writeLabTB(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

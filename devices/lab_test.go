package devices

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/tomlfile"
)

// fixture is a small valid lab: one device type, two devices.
func fixture() map[string]string {
	return map[string]string{
		"lab.toml": `name = "test"
device_types = ["types"]
devices = ["devices"]

[boot_server]
root = "boot"
http_listen = "127.0.0.1:0"
http_url = "http://10.0.2.2:8080"
`,
		"types/qemu.toml": `description = "test type"

[power]
cipher_suite = 3

[console]
driver = "command"
connection_command = "ipmitool -I lanplus -H {{.Host}} -p {{.Port}} -U {{.User}} -E sol activate"
pacing = "echo"
test_shell_serial_delay_ms = 5

[master]
kernel = "k/vmlinuz"
initrd = "k/initrd"
prompt = "master# "
network_commands = ["udhcpc"]
disk = "/dev/vda"

[login]
shell_prompt = "# "
`,
		"devices/n1.toml": `device_type = "qemu"
tags = ["a", "b"]
mac = "52:54:00:00:00:01"

[bmc]
host = "127.0.0.1"
port = 16230
user = "admin"
password_file = "n1.password"
`,
		"devices/n2.toml": `name = "n2"
device_type = "qemu"
tags = ["a"]
mac = "52-54-00-00-00-02"
ip = "10.0.0.2"

[bmc]
host = "127.0.0.1"
port = 16240
user = "admin"
password_env = "LABCTL_TEST_N2_PASSWORD"

[override]
console.test_shell_serial_delay_ms = 100
master.network_commands = ["ip link set eth0 up", "udhcpc"]
`,
		"devices/n1.password": "s3cret-pw\n",
	}
}

// writeLab writes files under a new directory and returns its path.
func writeLab(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoad(t *testing.T) {
	dir := writeLab(t, fixture())
	lab, err := Load(filepath.Join(dir, "lab.toml"))
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	if len(lab.Warnings) != 0 {
		t.Errorf("warnings = %v, want none", lab.Warnings)
	}
	if got := slices.Collect(maps.Keys(lab.DeviceTypes)); !slices.Equal(got, []string{"qemu"}) {
		t.Errorf("device types = %v", got)
	}
	if lab.StateDir != filepath.Join(dir, "state") || lab.BootServer.Root != filepath.Join(dir, "boot") {
		t.Errorf("state_dir = %q, root = %q: want them absolute, relative to the lab file", lab.StateDir, lab.BootServer.Root)
	}
	if lab.BootServer.TFTPListen != ":69" || lab.BootServer.TFTPServer != "10.0.2.2" || lab.Server.Listen != "127.0.0.1:8470" {
		t.Errorf("boot server = %+v, server = %+v: want the defaults", lab.BootServer, lab.Server)
	}
	if lab.Health != (LabHealth{Failures: 1}) || lab.Jobs != (JobDefaults{Retries: 1}) {
		t.Errorf("health = %+v, jobs = %+v: want no periodic checks, offline at the first failure, one retry", lab.Health, lab.Jobs)
	}
	var names []string
	for _, d := range lab.Devices {
		names = append(names, d.Name)
	}
	if !slices.Equal(names, []string{"n1", "n2"}) {
		t.Fatalf("devices = %v, want n1 (named by its file) and n2", names)
	}
	n1, n2 := lab.Devices[0], lab.Devices[1]
	if n1.BMC.PasswordFile != filepath.Join(dir, "devices", "n1.password") || n1.BMC.Port != 16230 {
		t.Errorf("n1 bmc = %+v, want the password file made absolute", n1.BMC)
	}
	if n2.MAC.String() != "52:54:00:00:00:02" || n2.IP.String() != "10.0.0.2" {
		t.Errorf("n2 mac = %s ip = %s", n2.MAC, n2.IP)
	}
	typ := lab.DeviceTypes["qemu"]
	if typ.Console.TestShellSerialDelayMs != 5 || n1.Settings.Console.TestShellSerialDelayMs != 5 {
		t.Errorf("n1 delay = %d, type delay = %d, want 5", n1.Settings.Console.TestShellSerialDelayMs, typ.Console.TestShellSerialDelayMs)
	}
	// The override changes the keys it gives and nothing else, and not the type.
	if got := n2.Settings.Console.TestShellDelay(); got != 100*time.Millisecond {
		t.Errorf("n2 test shell delay = %v, want the override's 100ms", got)
	}
	if !slices.Equal(n2.Settings.Master.NetworkCommands, []string{"ip link set eth0 up", "udhcpc"}) ||
		!slices.Equal(typ.Master.NetworkCommands, []string{"udhcpc"}) {
		t.Errorf("network commands: n2 %q, type %q", n2.Settings.Master.NetworkCommands, typ.Master.NetworkCommands)
	}
	if n2.Settings.Console.Pacing != PacingEcho || n2.Settings.Master.Disk != "/dev/vda" || n2.Settings.Power.CipherSuite != 3 {
		t.Errorf("n2 settings lost keys of its type: %+v", n2.Settings)
	}
	if n2.Settings.Timeouts.Job != time.Hour || n2.Settings.Power.Method != PowerIPMI {
		t.Errorf("n2 settings lost the defaults: %+v", n2.Settings)
	}

	if got := lab.Match("qemu", []string{"b"}); len(got) != 1 || got[0].Name != "n1" {
		t.Errorf("Match(qemu, [b]) = %v, want n1", got)
	}
	if got := lab.Match("", []string{"a"}); len(got) != 2 {
		t.Errorf("Match(\"\", [a]) = %v, want both", got)
	}
	if got := lab.Match("other", nil); len(got) != 0 {
		t.Errorf("Match(other) = %v, want none", got)
	}
	if d, ok := lab.Device("n2"); !ok || d != n2 {
		t.Errorf("Device(n2) = %v, %v", d, ok)
	}
}

func TestLoadProblems(t *testing.T) {
	tests := []struct {
		name   string
		change func(files map[string]string)
		want   []string // problems, with paths relative to the lab directory
	}{
		{
			name: "unknown key in a device type, with its line",
			change: func(f map[string]string) {
				f["types/qemu.toml"] = strings.Replace(f["types/qemu.toml"], "[master]\n", "[master]\nkernal = \"x\"\n", 1)
			},
			want: []string{`types/qemu.toml:13: master.kernal: unknown key (did you mean "kernel"?)`},
		},
		{
			name: "self-healing settings",
			change: func(f map[string]string) {
				f["lab.toml"] += "[health]\ninterval = \"-1h\"\nfailures = 0\n[jobs]\nretries = 11\nqueue_timeout = \"-5m\"\n"
			},
			want: []string{
				"lab.toml:10: health.interval: must not be negative (0 or absent: no periodic checks)",
				"lab.toml:11: health.failures: 0: give the checks in a row a device may fail before it goes offline, 1 to 100",
				"lab.toml:13: jobs.retries: 11: give 0 to 10",
				"lab.toml:14: jobs.queue_timeout: must not be negative (0 or absent: jobs wait as long as it takes)",
			},
		},
		{
			name: "store URL with a password",
			change: func(f map[string]string) {
				f["lab.toml"] += "[store]\nurl = \"postgres://labctl:hunter2@db:5432/labctl\"\npassword_env = \"PG PW\"\n"
			},
			want: []string{
				"lab.toml:10: store.url: the URL holds a password: remove it and give password_file or password_env",
				`lab.toml:11: store.password_env: "PG PW" is not an environment variable name`,
			},
		},
		{
			name: "store URL that does not parse",
			change: func(f map[string]string) {
				f["lab.toml"] += "[store]\nurl = \"postgres://labctl@db:54x2/labctl\"\npassword_file = \"none\"\n"
			},
			want: []string{
				`lab.toml:10: store.url: does not parse as a URL (postgres://user@host:port/database?sslmode=...): invalid port ":54x2" after host`,
				"lab.toml:11: store.password_file: stat DIR/none: no such file or directory",
			},
		},
		{
			name: "store URL of another database",
			change: func(f map[string]string) {
				f["lab.toml"] += "[store]\nurl = \"mysql://labctl@db/labctl\"\n"
			},
			want: []string{`lab.toml:10: store.url: the scheme is "mysql": give a postgres:// URL (postgres://user@host:port/database?sslmode=...)`},
		},
		{
			name: "store password without URL",
			change: func(f map[string]string) {
				f["lab.toml"] += "[store]\npassword_env = \"PGPW\"\n"
			},
			want: []string{"lab.toml:9: store.url: required with a store password: the PostgreSQL database, postgres://user@host:port/database"},
		},
		{
			name: "wrong type",
			change: func(f map[string]string) {
				f["devices/n1.toml"] = strings.Replace(f["devices/n1.toml"], "port = 16230", `port = "16230"`, 1)
			},
			want: []string{"devices/n1.toml:7: bmc.port: must be an integer, not a string"},
		},
		{
			name: "missing field",
			change: func(f map[string]string) {
				f["devices/n1.toml"] = strings.Replace(f["devices/n1.toml"], "user = \"admin\"\n", "", 1)
			},
			want: []string{"devices/n1.toml:5: bmc.user: required: the BMC user name"},
		},
		{
			name: "missing table",
			change: func(f map[string]string) {
				f["types/qemu.toml"] = strings.Replace(f["types/qemu.toml"], "[login]\nshell_prompt = \"# \"\n", "", 1)
			},
			want: []string{"types/qemu.toml: login.shell_prompt: required: the test OS's shell prompt after login"},
		},
		{
			name: "bad duration",
			change: func(f map[string]string) {
				f["types/qemu.toml"] += "[timeouts]\njob = \"1 hour\"\n"
			},
			want: []string{`types/qemu.toml:22: timeouts.job: invalid duration "1 hour": want a number with a unit, such as "90s", "5m" or "1h30m"`},
		},
		{
			name: "image networks and size",
			change: func(f map[string]string) {
				f["lab.toml"] += "\n[images]\nallow_networks = [\n  \"10.0.0.0/8\",\n  \"10.0.0.1/8\",\n  \"intranet\",\n]\nmax_download_gib = -1\n"
			},
			want: []string{
				`lab.toml:13: images.allow_networks[1]: "10.0.0.1/8" has host bits set: the network is 10.0.0.0/8`,
				`lab.toml:14: images.allow_networks[2]: "intranet" is not a network: use CIDR notation (10.0.0.0/8, fd00::/8) or one IP address`,
				`lab.toml:16: images.max_download_gib: -1 is not a size in GiB (1 to 4294967296; 0 or unset for the default, 64)`,
			},
		},
		{
			name: "webhooks",
			change: func(f map[string]string) {
				f["lab.toml"] += "\n[[webhooks]]\nurl = \"ftp://x\"\nsecret_env = \"1X\"\nevents = [\"job.start\"]\n[[webhooks]]\nurl = \"https://ci.example.org/h\"\n[notify]\nsecret_file = \"a\"\nsecret_env = \"B\"\n"
			},
			want: []string{
				`lab.toml:11: webhooks[0].url: "ftp://x" is not an http:// or https:// URL with a host`,
				`lab.toml:12: webhooks[0].secret_env: "1X" is not an environment variable name`,
				`lab.toml:13: webhooks[0].events[0]: "job.start" is not an event: use job.end or device.state`,
				`lab.toml:14: webhooks[1].secret_file: required: a secret_file or a secret_env (the key events are signed with)`,
				`lab.toml:18: notify.secret_env: give either secret_file or secret_env, not both`,
			},
		},
		{
			name: "retention bounds",
			change: func(f map[string]string) {
				f["lab.toml"] += "[retention]\nmax_age = \"-1h\"\nmax_jobs = -5\n"
			},
			want: []string{
				`lab.toml:10: retention.max_age: -1h0m0s is negative: how long finished jobs are kept, e.g. "720h"`,
				"lab.toml:11: retention.max_jobs: -5 is negative: how many finished jobs are kept, e.g. 10000",
			},
		},
		{
			name: "bad MAC",
			change: func(f map[string]string) {
				f["devices/n1.toml"] = strings.Replace(f["devices/n1.toml"], "52:54:00:00:00:01", "52:54:00:00:01", 1)
			},
			want: []string{`devices/n1.toml:3: mac: "52:54:00:00:01" is not a MAC address such as 52:54:00:12:34:56`},
		},
		{
			name: "multicast MAC",
			change: func(f map[string]string) {
				f["devices/n1.toml"] = strings.Replace(f["devices/n1.toml"], "52:54:00:00:00:01", "01:00:5e:00:00:01", 1)
			},
			want: []string{`devices/n1.toml:3: mac: 01:00:5e:00:00:01 is a multicast address, not a network card's`},
		},
		{
			name: "duplicate MAC",
			change: func(f map[string]string) {
				f["devices/n2.toml"] = strings.Replace(f["devices/n2.toml"], "52-54-00-00-00-02", "52:54:00:00:00:01", 1)
			},
			want: []string{"devices/n2.toml:4: mac: 52:54:00:00:00:01 is also the MAC of n1 (DIR/devices/n1.toml)"},
		},
		{
			name: "duplicate device",
			change: func(f map[string]string) {
				f["lab.toml"] = strings.Replace(f["lab.toml"], `devices = ["devices"]`, `devices = ["devices", "more"]`, 1)
				f["more/n1.toml"] = strings.Replace(f["devices/n1.toml"], "01\"", "09\"", 1)
				f["more/n1.password"] = "x\n"
			},
			want: []string{"more/n1.toml: name: device \"n1\" is also defined in DIR/devices/n1.toml"},
		},
		{
			name: "same BMC twice",
			change: func(f map[string]string) {
				f["devices/n2.toml"] = strings.Replace(f["devices/n2.toml"], "16240", "16230", 1)
			},
			want: []string{"devices/n2.toml:9: bmc.port: 127.0.0.1:16230 is also the BMC of n1 (DIR/devices/n1.toml): one BMC, one device"},
		},
		{
			name: "name does not match the file",
			change: func(f map[string]string) {
				f["devices/n2.toml"] = strings.Replace(f["devices/n2.toml"], `name = "n2"`, `name = "n3"`, 1)
			},
			want: []string{`devices/n2.toml:1: name: device "n3" must be in a file named n3.toml`},
		},
		{
			name: "unknown device type",
			change: func(f map[string]string) {
				f["devices/n1.toml"] = strings.Replace(f["devices/n1.toml"], `"qemu"`, `"qemu-arm"`, 1)
			},
			want: []string{`devices/n1.toml:1: device_type: unknown device type "qemu-arm" (known: qemu)`},
		},
		{
			name: "broken device type: its devices are not checked against it",
			change: func(f map[string]string) {
				f["types/qemu.toml"] = strings.Replace(f["types/qemu.toml"], "cipher_suite = 3", "cipher_suite = 4", 1)
			},
			want: []string{"types/qemu.toml:4: power.cipher_suite: 4 is not an IPMI cipher suite (0 to 3, 6 to 8, 11, 12, 15 to 17)"},
		},
		{
			name: "bad cycle and verify modes",
			change: func(f map[string]string) {
				f["types/qemu.toml"] = strings.Replace(f["types/qemu.toml"], "cipher_suite = 3", "cipher_suite = 3\ncycle = \"reset\"", 1) + "[deploy]\nverify = \"none\"\n"
			},
			want: []string{
				`types/qemu.toml:5: power.cycle: "reset" is not a power cycle mode: use "cycle" or "off-on"`,
				`types/qemu.toml:23: deploy.verify: "none" is not a verify mode: use "readback" or "stream" or "both"`,
			},
		},
		{
			name: "password in a command template",
			change: func(f map[string]string) {
				f["types/qemu.toml"] = strings.Replace(f["types/qemu.toml"], "-E sol", "-P {{.Password}} sol", 1)
			},
			want: []string{"types/qemu.toml:8: console.connection_command: commands never get the password: ipmitool reads it from IPMI_PASSWORD with -E, or from a file with -f {{.PasswordFile}}"},
		},
		{
			name: "ipmitool -P with a literal password",
			change: func(f map[string]string) {
				f["types/qemu.toml"] = strings.Replace(f["types/qemu.toml"], "-E sol", "-P admin sol", 1)
			},
			want: []string{"types/qemu.toml:8: console.connection_command: ipmitool -P puts the password on the command line, where every user can read it: use -E (labctl sets IPMI_PASSWORD) or -f {{.PasswordFile}}"},
		},
		{
			name: "unknown template field",
			change: func(f map[string]string) {
				f["types/qemu.toml"] = strings.Replace(f["types/qemu.toml"], "{{.Host}}", "{{.Hostname}}", 1)
			},
			want: []string{"types/qemu.toml:8: console.connection_command: unknown field {{.Hostname}}: use {{.Name}} {{.Host}} {{.Port}} {{.User}} {{.PasswordFile}} {{.MAC}} {{.IP}}"},
		},
		{
			name: "password file template with a password from the environment",
			change: func(f map[string]string) {
				f["types/qemu.toml"] = strings.Replace(f["types/qemu.toml"], "-E sol", "-f {{.PasswordFile}} sol", 1)
			},
			want: []string{"devices/n2.toml:11: bmc.password_env: console.connection_command reads the password from {{.PasswordFile}}: give a password_file"},
		},
		{
			name: "override of a nested key: unknown key and wrong type",
			change: func(f map[string]string) {
				f["devices/n2.toml"] += "console.test_shell_delay_ms = 5\nmaster.disk = 1\n"
			},
			want: []string{
				`devices/n2.toml:16: override.console.test_shell_delay_ms: unknown key (did you mean "test_shell_serial_delay_ms"?)`,
				"devices/n2.toml:17: override.master.disk: must be a string, not an integer",
			},
		},
		{
			name: "echo window out of range in a device type",
			change: func(f map[string]string) {
				f["types/qemu.toml"] = strings.Replace(f["types/qemu.toml"], "pacing = \"echo\"\n", "pacing = \"echo\"\necho_window = 0\n", 1)
			},
			want: []string{"types/qemu.toml:10: console.echo_window: 0: give 1 to 16 (characters on their way at once)"},
		},
		{
			name: "echo window out of range in an override",
			change: func(f map[string]string) {
				f["devices/n2.toml"] += "console.echo_window = 17\n"
			},
			want: []string{"devices/n2.toml:16: override.console.echo_window: 17: give 1 to 16 (characters on their way at once)"},
		},
		{
			name: "override checked together with its device type",
			change: func(f map[string]string) {
				f["devices/n2.toml"] += "console.driver = \"ipmi\"\n[override.power]\nmethod = \"command\"\n"
			},
			want: []string{
				`devices/n2.toml:17: override.power.off_command: required with method = "command"`,
				`devices/n2.toml:17: override.power.on_command: required with method = "command"`,
				`devices/n2.toml:17: override.power.status_command: required with method = "command"`,
			},
		},
		{
			name: "override cannot rename the device type",
			change: func(f map[string]string) {
				f["devices/n2.toml"] += "name = \"x\"\n"
			},
			want: []string{`devices/n2.toml:16: override.name: unknown key`},
		},
		{
			name: "lab file problems",
			change: func(f map[string]string) {
				f["lab.toml"] = strings.NewReplacer(
					`devices = ["devices"]`, `devices = ["nodes"]`,
					`http_listen = "127.0.0.1:0"`, `http_listen = "127.0.0.1"`,
					`http_url = "http://10.0.2.2:8080"`, `http_url = "10.0.2.2:8080"`,
				).Replace(f["lab.toml"]) + "[server]\nlisten = \":99999\"\n[[server.tokens]]\nname = \"ci\"\n"
			},
			want: []string{
				"lab.toml:3: devices[0]: open DIR/nodes: no such file or directory",
				`lab.toml:7: boot_server.http_listen: "127.0.0.1" is not host:port (e.g. 127.0.0.1:8080, or :8080 for every address)`,
				`lab.toml:8: boot_server.http_url: "10.0.2.2:8080" is not an http:// or https:// URL with a host`,
				`lab.toml:10: server.listen: "99999" is not a port (0 to 65535)`,
				"lab.toml:11: server.tokens[0].role: required: what the token may do: viewer, submitter, operator or admin",
				"lab.toml:11: server.tokens[0].token_file: required: a token_file or a token_env",
			},
		},
		{
			name: "a token named like the hosts' credential",
			change: func(f map[string]string) {
				f["lab.toml"] += "[server]\n[[server.tokens]]\nname = \"lab-hosts\"\nrole = \"viewer\"\ntoken_env = \"T\"\n"
			},
			want: []string{`lab.toml:11: server.tokens[0].name: "lab-hosts" is the name of the lab's hosts' own credential ([host] token): choose another`},
		},
		{
			name: "syntax error in one file, problems in another",
			change: func(f map[string]string) {
				f["devices/n1.toml"] = "device_type = \"qemu\n"
				f["devices/n2.toml"] = strings.Replace(f["devices/n2.toml"], `"qemu"`, `"x y"`, 1)
			},
			want: []string{
				"devices/n1.toml:1: strings cannot contain newlines",
				`devices/n2.toml:2: device_type: "x y" is not a valid name: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := fixture()
			tt.change(files)
			dir := writeLab(t, files)
			_, err := Load(filepath.Join(dir, "lab.toml"))
			var got []string
			for _, p := range tomlfile.Problems("lab.toml", err) {
				got = append(got, strings.ReplaceAll(strings.TrimPrefix(p.String(), dir+"/"), dir, "DIR"))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Load() problems =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestLoadAbsoluteDirectories(t *testing.T) {
	files := fixture()
	types := t.TempDir()
	if err := os.WriteFile(filepath.Join(types, "qemu.toml"), []byte(files["types/qemu.toml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	delete(files, "types/qemu.toml")
	files["lab.toml"] = strings.Replace(files["lab.toml"], `["types"]`, fmt.Sprintf("[%q]", types), 1)
	dir := writeLab(t, files)
	// A relative lab path, so that the absolute directory is joined to one.
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, filepath.Join(dir, "lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	lab, err := Load(rel)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	if lab.DeviceTypes["qemu"] == nil || len(lab.Devices) != 2 {
		t.Errorf("device types %v, %d devices: want qemu from %s and 2 devices", lab.DeviceTypes, len(lab.Devices), types)
	}
}

func TestLoadWarnsAboutReadablePasswordFile(t *testing.T) {
	dir := writeLab(t, fixture())
	if err := os.Chmod(filepath.Join(dir, "devices", "n1.password"), 0o644); err != nil {
		t.Fatal(err)
	}
	lab, err := Load(filepath.Join(dir, "lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lab.Warnings) != 1 || !strings.Contains(lab.Warnings[0].String(), "n1.toml:9: bmc.password_file: warning: ") ||
		!strings.Contains(lab.Warnings[0].String(), "can be read by every user (mode 0644)") {
		t.Errorf("warnings = %v, want one about n1's password file", lab.Warnings)
	}
}

func TestPasswordAndArgv(t *testing.T) {
	dir := writeLab(t, fixture())
	lab, err := Load(filepath.Join(dir, "lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	n1, _ := lab.Device("n1")
	pw, err := n1.Password()
	if err != nil || pw.Reveal() != "s3cret-pw" {
		t.Fatalf("Password() = %v, %v", pw.Reveal(), err)
	}
	argv, err := n1.Argv(n1.Settings.Console.ConnectionCommand)
	want := []string{"ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", "16230", "-U", "admin", "-E", "sol", "activate"}
	if err != nil || !slices.Equal(argv, want) {
		t.Errorf("Argv() = %q, %v; want %q", argv, err, want)
	}

	n2, _ := lab.Device("n2")
	if _, err := n2.Password(); err == nil || !strings.Contains(err.Error(), "LABCTL_TEST_N2_PASSWORD is not set") {
		t.Errorf("Password() without the variable = %v, want an error naming it", err)
	}
	t.Setenv("LABCTL_TEST_N2_PASSWORD", "from-env")
	if pw, err := n2.Password(); err != nil || pw.Reveal() != "from-env" {
		t.Errorf("Password() = %q, %v", pw.Reveal(), err)
	}
	if _, err := n1.Argv(Command{}); err == nil {
		t.Error("Argv(no command) returned no error")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := NewSecret("hunter2")
	holder := struct {
		Name string
		pw   Secret
		PW   Secret
	}{"n1", s, s}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("bmc", "password", s, "holder", holder)
	outputs := []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x %d", s, s, s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v", holder, holder, holder), logged.String(),
	}
	if text, err := s.MarshalText(); err != nil || string(text) != "[redacted]" {
		t.Errorf("MarshalText() = %q, %v", text, err)
	}
	for _, out := range outputs {
		if strings.Contains(out, "hunter2") || strings.Contains(out, fmt.Sprintf("%x", "hunter2")) {
			t.Errorf("the secret shows in %q", out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Errorf("Reveal() = %q", s.Reveal())
	}
}

// [images] gives the networks URL images may come from (CIDR or one
// address) and the download size limit.
func TestLoadImages(t *testing.T) {
	files := fixture()
	lab, err := Load(filepath.Join(writeLab(t, files), "lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lab.Images.Networks) != 0 || lab.Images.MaxDownload() != 0 {
		t.Errorf("default images = %+v, want no networks and the default size", lab.Images)
	}
	files["lab.toml"] += "\n[images]\nallow_networks = [\"10.0.0.0/8\", \"127.0.0.1\", \"fd00::/8\"]\nmax_download_gib = 2\n"
	lab, err = Load(filepath.Join(writeLab(t, files), "lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(lab.Images.Networks); got != "[10.0.0.0/8 127.0.0.1/32 fd00::/8]" {
		t.Errorf("networks = %s", got)
	}
	if lab.Images.MaxDownload() != 2<<30 {
		t.Errorf("MaxDownload = %d", lab.Images.MaxDownload())
	}
}

func TestLoadStore(t *testing.T) {
	files := fixture()
	files["lab.toml"] += "[store]\nurl = \"postgresql://labctl@db.example:5432/labctl?sslmode=verify-full\"\npassword_file = \"pg.password\"\n"
	files["pg.password"] = "pg-s3cret\n"
	dir := writeLab(t, files)
	lab, err := Load(filepath.Join(dir, "lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if lab.Store.URL != "postgresql://labctl@db.example:5432/labctl?sslmode=verify-full" || lab.Store.PasswordFile != filepath.Join(dir, "pg.password") {
		t.Errorf("Store = %+v", lab.Store)
	}
	pw, err := lab.Store.Password()
	if err != nil || pw.Reveal() != "pg-s3cret" {
		t.Errorf("Password = %v, %v", pw, err)
	}
	if pw, err := (Store{URL: "postgres://x@y/z"}).Password(); err != nil || pw.Reveal() != "" {
		t.Errorf("Password without file or env = %q, %v; want none", pw.Reveal(), err)
	}
}

func TestLoadNFS(t *testing.T) {
	files := fixture()
	files["lab.toml"] += "\n[nfs]\nserver = \"ganesha\"\npid_file = \"/run/ganesha/ganesha.pid\"\nlog_file = \"ganesha.log\"\nhost = \"10.0.2.2\"\nclient = \"127.0.0.1\"\n"
	dir := writeLab(t, files)
	lab, err := Load(filepath.Join(dir, "lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if n := lab.NFS; n.ExportsDir != filepath.Join(lab.StateDir, "nfs") || n.LogFile != filepath.Join(dir, "ganesha.log") || n.PIDFile != "/run/ganesha/ganesha.pid" {
		t.Errorf("NFS = %+v", n)
	}
	files = fixture()
	files["lab.toml"] += "\n[nfs]\nserver = \"kernel\"\n"
	_, err = Load(filepath.Join(writeLab(t, files), "lab.toml"))
	if err == nil || !strings.Contains(err.Error(), `nfs.server: "kernel": the one server labctl manages is "ganesha"`) {
		t.Errorf("kernel server: %v", err)
	}
	files = fixture()
	files["lab.toml"] += "\n[nfs]\nserver = \"ganesha\"\nhost = \"nfs.example\"\nclient = \"x\"\n"
	_, err = Load(filepath.Join(writeLab(t, files), "lab.toml"))
	for _, want := range []string{"nfs.pid_file: required", "nfs.log_file: required", "nfs.host: \"nfs.example\": want the IP address", "nfs.client: \"x\" is not an IP address"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}

// Saved images go beside the lab file by default, never into the state
// directory (labctl keeps it private; deploy needs images anyone may read).
func TestSaveDir(t *testing.T) {
	dir := t.TempDir()
	write := func(extra string) (*Lab, error) {
		os.MkdirAll(filepath.Join(dir, "types"), 0o755)
		os.MkdirAll(filepath.Join(dir, "devices"), 0o755)
		lab := "name = \"l\"\ndevice_types = [\"types\"]\ndevices = [\"devices\"]\n[boot_server]\nroot = \"root\"\nhttp_listen = \"127.0.0.1:1\"\nhttp_url = \"http://10.0.0.1:1\"\n" + extra
		os.WriteFile(filepath.Join(dir, "lab.toml"), []byte(lab), 0o644)
		return Load(filepath.Join(dir, "lab.toml"))
	}
	l, err := write("")
	if err != nil {
		t.Fatal(err)
	}
	if l.Images.SaveDir != filepath.Join(dir, "images") {
		t.Errorf("default save_dir %s", l.Images.SaveDir)
	}
	if _, err := write("[images]\nsave_dir = \"state/images\"\n"); err == nil || !strings.Contains(err.Error(), "images.save_dir") {
		t.Errorf("save_dir inside state_dir: %v", err)
	}
}

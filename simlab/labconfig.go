package simlab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// writeLabConfig writes the lab config for labctl in the formats of
// docs/architecture.md ("Files"): lab.toml, and devices/NAME.toml per node
// (the password files are already there).
func writeLabConfig(l *Lab, deviceTypes string) error {
	token, err := randomHex(16)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.Dir, "ci.token"), []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("write lab config: %w", err)
	}
	b := l.BootServer
	where := ""
	if l.Network != nil {
		where = fmt.Sprintf("# The boot server and the API listen in the lab's network namespace: run\n# labctl there (ip netns exec %s labctl ...). DHCP: dnsmasq, %s.\n", l.Network.NetNS, l.Network.DHCPLog)
	}
	lab := fmt.Sprintf(`# Simulated lab written by `+"`simlab up`"+`: %d node(s), QEMU accelerator %s.
`+where+`name = "simlab"
device_types = [%s]
devices = ["devices"]
state_dir = "state"

[boot_server]
root = %s
tftp_listen = %s
http_listen = %s
http_url = %s
tftp_server = %s

[server]
listen = %s

[[server.tokens]]
name = "ci"
role = "admin"
token_file = "ci.token"
`, len(l.Nodes), l.Accel, tomlString(deviceTypes), tomlString(b.Root), tomlString(b.TFTPAddr),
		tomlString(b.HTTPAddr), tomlString(b.HTTPURL), tomlString(b.TFTPServer), tomlString(b.ServerAddr))
	if l.NFS != nil {
		// Every node is 127.0.0.1 to the server through its user-mode
		// network (docs/diskless.md: the random export path restricts).
		c := l.NFS.Config
		lab += fmt.Sprintf(`
# nfs-ganesha of this lab (simlab up --nfs), for diskless nfs jobs.
[nfs]
server = "ganesha"
exports_dir = %s
pid_file = %s
log_file = %s
host = %s
port = %d
client = "127.0.0.1"
`, tomlString(c.ExportsDir), tomlString(c.PIDFile), tomlString(c.LogFile), tomlString(HostFromGuest), c.Port)
	}
	for _, n := range l.Nodes {
		dev := fmt.Sprintf(`# Simulated node %s: slot %d, console log %s
name = %s
device_type = %s
tags = ["x86", "simlab"]
mac = %s
ip = %s

[bmc]
host = %s
port = %d
user = %s
password_file = %s
`, n.Name, n.Slot, n.ConsoleLog, tomlString(n.Name), tomlString(DeviceTypeFor(n.Firmware)), tomlString(n.MAC), tomlString(n.IP),
			tomlString(n.BMC.Host), n.BMC.Port, tomlString(n.BMC.User), tomlString(filepath.Base(n.BMC.PasswordFile)))
		if err := os.WriteFile(n.DeviceFile, []byte(dev), 0o644); err != nil {
			return fmt.Errorf("write lab config: %w", err)
		}
	}
	if err := os.WriteFile(l.ConfigPath, []byte(lab), 0o644); err != nil {
		return fmt.Errorf("write lab config: %w", err)
	}
	return nil
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

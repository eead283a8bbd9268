package simlab

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/labctl/labctl/devices"
)

func TestTOMLString(t *testing.T) {
	for in, want := range map[string]string{
		"plain":           `"plain"`,
		`a"b`:             `"a\"b"`,
		`c:\x`:            `"c:\\x"`,
		"tab\tnl\n":       `"tab\u0009nl\u000A"`,
		"/tmp/Test x/lab": `"/tmp/Test x/lab"`,
	} {
		if got := tomlString(in); got != want {
			t.Errorf("tomlString(%q) = %s, want %s", in, got, want)
		}
		var v struct{ S string }
		if _, err := toml.Decode("S = "+tomlString(in), &v); err != nil || v.S != in {
			t.Errorf("tomlString(%q) reads back as %q, %v", in, v.S, err)
		}
	}
}

// TestWriteLabConfig: the lab config simlab writes is what labctl's
// devices package loads (the contract in docs/architecture.md, "Files").
func TestWriteLabConfig(t *testing.T) {
	dir := t.TempDir()
	root, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	deviceTypes := filepath.Join(root, "device-types")
	if _, err := os.Stat(filepath.Join(deviceTypes, DeviceType+".toml")); err != nil {
		t.Fatalf("no %s device type in device-types/: %v", DeviceType, err)
	}
	for _, d := range []string{"devices", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lab := &Lab{
		Dir:        dir,
		ConfigPath: filepath.Join(dir, labConfigFile),
		Accel:      "tcg",
		BootServer: BootServer{Root: "/srv/bootroot", TFTPAddr: "127.0.0.1:16234", HTTPAddr: "127.0.0.1:16235",
			HTTPURL: "http://10.0.2.2:16235", TFTPServer: HostFromGuest, TFTPPort: 16234, ServerAddr: "127.0.0.1:16236"},
	}
	for i, slot := range []int{0, 1} {
		name := []string{"node1", "node2"}[i]
		pw := filepath.Join(dir, "devices", name+".password")
		if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		lab.Nodes = append(lab.Nodes, &Node{Name: name, Slot: slot, MAC: MACForSlot(slot), IP: NodeIP,
			BMC:        BMC{Host: "127.0.0.1", Port: SlotPorts(slot).BMC, User: "admin", Password: "secret", PasswordFile: pw, CipherSuite: 3},
			DeviceFile: filepath.Join(dir, "devices", name+".toml"), ConsoleLog: filepath.Join(dir, name+".log")})
	}
	if err := writeLabConfig(lab, deviceTypes); err != nil {
		t.Fatal(err)
	}
	got, err := devices.Load(lab.ConfigPath)
	if err != nil {
		t.Fatalf("devices.Load of the written lab config: %v", err)
	}
	if len(got.Devices) != 2 {
		t.Fatalf("loaded %d devices, want 2", len(got.Devices))
	}
	c := got.Config
	if c.BootServer.Root != "/srv/bootroot" || c.BootServer.TFTPListen != "127.0.0.1:16234" ||
		c.BootServer.HTTPListen != "127.0.0.1:16235" || c.BootServer.HTTPURL != "http://10.0.2.2:16235" ||
		c.Server.Listen != "127.0.0.1:16236" {
		t.Errorf("boot server / server config: %+v %+v", c.BootServer, c.Server)
	}
	for i, d := range got.Devices {
		n := lab.Nodes[i]
		if d.Name != n.Name || d.DeviceType != DeviceType || d.MAC.String() != n.MAC || d.BMC.Port != n.BMC.Port || d.BMC.User != "admin" {
			t.Errorf("device %d: %+v", i, d)
		}
		pw, err := d.Password()
		if err != nil || pw.Reveal() != "secret" {
			t.Errorf("%s password: %v", d.Name, err)
		}
	}
}

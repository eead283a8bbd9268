package simlab

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

// NodeConfig is everything a node's relay needs; `simlab up` writes it to
// DIR/node.json and `simlab relay --node DIR` reads it. The BMC password is
// not in it: it lives in PasswordFile (mode 0600) and in ipmi_sim's lan.conf.
type NodeConfig struct {
	Name  string `json:"name"`
	Slot  int    `json:"slot"`
	Ports Ports  `json:"ports"`
	// Dir is the node's directory (absolute): config, logs, pid files, disk.
	Dir string `json:"dir"`
	// ControlSocket is the relay's control socket (see Pool.ControlSocket).
	ControlSocket string `json:"control_socket"`
	MAC           string `json:"mac"`
	BMCUser       string `json:"bmc_user"`
	PasswordFile  string `json:"password_file"`
	// Accel is the QEMU accelerator, "tcg" or "kvm".
	Accel    string `json:"accel"`
	MemoryMB int    `json:"memory_mb"`
	// Disk is the node's sparse raw disk image.
	Disk string `json:"disk"`
	// BootFile is the DHCP bootfile URL the PXE ROM fetches (user-mode
	// networking only; on the bridge, dnsmasq says what to boot).
	BootFile string `json:"boot_file"`
	// Firmware is FirmwareBIOS (empty), FirmwareUEFI or FirmwareSecureBoot.
	Firmware string `json:"firmware,omitempty"`
	// NetNS and Tap put the NIC on the lab's bridge: QEMU runs in the
	// namespace (IPTool netns exec) on the tap device. Empty: user-mode
	// networking.
	NetNS  string `json:"netns,omitempty"`
	Tap    string `json:"tap,omitempty"`
	IPTool string `json:"ip_tool,omitempty"`
	// Simlab is the absolute path of the simlab binary (the chassis hook).
	Simlab   string `json:"simlab"`
	QEMU     string `json:"qemu"`
	IPMISim  string `json:"ipmi_sim"`
	IPMITool string `json:"ipmitool"`
}

// Node directory layout.
const (
	nodeConfigFile = "node.json"
	statusFile     = "status.json"
	consoleLogFile = "console.log"
	relayLogFile   = "relay.log"
	relayPidFile   = "relay.pid"
	qemuPidFile    = "qemu.pid"
	ipmiSimPidFile = "ipmi_sim.pid"
	qemuLogFile    = "qemu.log"
	ipmiSimLogFile = "ipmi_sim.log"
	lanConfFile    = "lan.conf"
	bmcEmuFile     = "bmc.emu"
)

// WriteNodeConfig writes c to c.Dir/node.json.
func WriteNodeConfig(c NodeConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("write node config of %s: %w", c.Name, err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, nodeConfigFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write node config of %s: %w", c.Name, err)
	}
	return nil
}

// ReadNodeConfig reads DIR/node.json.
func ReadNodeConfig(dir string) (NodeConfig, error) {
	var c NodeConfig
	b, err := os.ReadFile(filepath.Join(dir, nodeConfigFile))
	if err != nil {
		return c, fmt.Errorf("read node config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("read node config %s: %w", filepath.Join(dir, nodeConfigFile), err)
	}
	return c, nil
}

//go:embed ipmi/bmc.emu
var bmcEmu []byte

//go:embed ipmi/lan.conf.tmpl
var lanConfTemplate string

// writeBMCConfig writes ipmi_sim's lan.conf (mode 0600: it holds the
// password) and bmc.emu into the node directory.
func writeBMCConfig(c NodeConfig, password string) error {
	if strings.ContainsAny(password, "\"\\\n") {
		return fmt.Errorf("bmc config of %s: the password must not contain quotes, backslashes or newlines", c.Name)
	}
	t, err := template.New("lan.conf").Parse(lanConfTemplate)
	if err != nil {
		return fmt.Errorf("bmc config of %s: %w", c.Name, err)
	}
	var buf bytes.Buffer
	err = t.Execute(&buf, map[string]string{
		"Name":        c.Name,
		"Addr":        BMCInternalIP,
		"Port":        strconv.Itoa(c.Ports.BMC),
		"SOLPort":     strconv.Itoa(c.Ports.SOL),
		"GUID":        guidFor(c),
		"ChassisHook": fmt.Sprintf("%s chassis --control %s", c.Simlab, c.ControlSocket),
		"User":        c.BMCUser,
		"Password":    password,
	})
	if err != nil {
		return fmt.Errorf("bmc config of %s: %w", c.Name, err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, lanConfFile), buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("bmc config of %s: %w", c.Name, err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, bmcEmuFile), bmcEmu, 0o644); err != nil {
		return fmt.Errorf("bmc config of %s: %w", c.Name, err)
	}
	return nil
}

// guidFor gives each node a distinct system GUID (RMCP+ needs one).
func guidFor(c NodeConfig) string {
	return fmt.Sprintf("5153494d4c41422d%016x", uint64(c.Slot)<<32|uint64(c.Ports.BMC))
}

// MACForSlot is the MAC address of the node in slot s: distinct on the
// machine, in QEMU's locally administered 52:54:00 range.
func MACForSlot(s int) string {
	return fmt.Sprintf("52:54:00:5e:%02x:%02x", (s>>8)&0xff, s&0xff)
}

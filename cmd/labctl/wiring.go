package main

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/lab"
	"github.com/labctl/labctl/netboot"
)

// newBootServer builds the lab's TFTP + HTTP boot server from its
// [boot_server] table (labctl run and labctl serve).
func newBootServer(cfg *devices.Lab, log *slog.Logger) (*netboot.Server, error) {
	boot, err := netboot.New(netboot.Config{
		Root:     cfg.BootServer.Root,
		TFTPAddr: cfg.BootServer.TFTPListen,
		HTTPAddr: cfg.BootServer.HTTPListen,
		HTTPURL:  cfg.BootServer.HTTPURL,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("boot server: %w", err)
	}
	return boot, nil
}

// labNodes gives the daemon each device's parts from the lab. A device
// whose IP another device shares (simlab nodes all have 10.0.2.15, each on
// its own user-mode network) gets its boot entry by MAC only: the boot
// server keeps one node per IP for hex-IP config names, and refuses a
// second one.
type labNodes struct {
	lab    *lab.Lab
	shared map[netip.Addr]bool
}

func newLabNodes(l *lab.Lab) *labNodes {
	seen := map[netip.Addr]int{}
	for _, d := range l.Config.Devices {
		if d.IP.IsValid() {
			seen[d.IP]++
		}
	}
	n := &labNodes{lab: l, shared: map[netip.Addr]bool{}}
	for ip, count := range seen {
		n.shared[ip] = count > 1
	}
	return n
}

// Node implements daemon.Nodes.
func (n *labNodes) Node(name string) (*lab.Node, error) {
	node, err := n.lab.Node(name)
	if err != nil {
		return nil, err
	}
	if node.Netboot != nil && n.shared[node.Device.IP] {
		byMAC := *node.Device
		byMAC.IP = netip.Addr{}
		node.Netboot = n.lab.Netboot(&byMAC)
	}
	return node, nil
}

// registerAll gives every device its local-boot entry on the boot server:
// the state between jobs (lab.RegisterAll, with shared IPs left out).
func (n *labNodes) registerAll() error {
	for _, d := range n.lab.Config.Devices {
		node, err := n.Node(d.Name)
		if err != nil {
			return err
		}
		if err := node.Netboot.BootLocal(); err != nil {
			return fmt.Errorf("device %s: %w", d.Name, err)
		}
	}
	return nil
}

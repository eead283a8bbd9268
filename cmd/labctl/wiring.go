package main

import (
	"fmt"
	"log/slog"

	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/netboot"
)

// newBootServer builds the lab's TFTP + HTTP boot server from its
// [boot_server] table (labctl run and labctl serve). It first raises the
// process's open-file limit: the boot server holds a socket per transfer
// and connection.
func newBootServer(cfg *devices.Lab, log *slog.Logger) (*netboot.Server, error) {
	if soft, hard, err := netboot.RaiseOpenFileLimit(); err != nil {
		log.Warn("cannot raise the open-file limit", "soft", soft, "hard", hard, "err", err)
	} else if soft > 0 {
		log.Debug("open-file limit", "soft", soft, "hard", hard)
	}
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

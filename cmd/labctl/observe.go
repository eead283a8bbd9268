//go:build !labctl_run

package main

import (
	"context"
	"log/slog"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/dispatcher"
	"github.com/labctl/labctl/lab"
	"github.com/labctl/labctl/metrics"
	"github.com/labctl/labctl/netboot"
	"github.com/labctl/labctl/webhooks"
)

// observers are labctl serve's metrics and webhooks, made before the
// daemon (which calls them) and given the daemon once it exists (which a
// scrape reads).
type observers struct {
	metrics  *metrics.Metrics
	webhooks *webhooks.Notifier
	daemon   *daemon.Daemon // set once made; read only by scrapes, which come after
}

// newObservers makes the lab's metrics and webhook notifier, and hooks
// the BMC clients of l to the metrics (before its nodes are made).
func newObservers(cfg *devices.Lab, boot *netboot.Server, l *lab.Lab, log *slog.Logger) (*observers, error) {
	o := &observers{}
	wc := webhooks.Config{
		Lab: cfg.Name, Log: log,
		// The jobs' rule for where the daemon may connect, as for images.
		JobClient: dispatcher.ImagePolicy{AllowNetworks: cfg.Images.Networks}.HTTPClient(),
	}
	for _, h := range cfg.Webhooks {
		s, err := h.Secret()
		if err != nil {
			return nil, err
		}
		wc.Hooks = append(wc.Hooks, webhooks.Hook{URL: h.URL, Secret: []byte(s.Reveal()), Events: h.Events})
	}
	if cfg.Notify.On() {
		s, err := cfg.Notify.Secret()
		if err != nil {
			return nil, err
		}
		wc.JobSecret = []byte(s.Reveal())
	}
	o.webhooks = webhooks.New(wc)
	src := metrics.Sources{
		Daemon:   func() daemon.Snapshot { return o.daemon.Snapshot() },
		Consoles: func(ctx context.Context) ([]labctl.ConsoleInfo, error) { return o.daemon.Consoles(ctx) },
		Webhooks: o.webhooks.Stats,
	}
	if boot != nil {
		src.Boot = boot.Stats
	}
	o.metrics = metrics.New(src)
	l.ObserveBMC = o.metrics.ObserveBMC
	return o, nil
}

// list is what the daemon calls.
func (o *observers) list() []daemon.Observer {
	return []daemon.Observer{o.metrics, o.webhooks}
}

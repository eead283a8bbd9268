package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/labctl/labctl"
)

// deviceStates are the values of the state label.
var deviceStates = []string{labctl.DeviceIdle, labctl.DeviceRunning, labctl.DeviceChecking, labctl.DeviceOffline, labctl.DeviceMaintenance}

// Descriptions of what a scrape reads.
var (
	queuedDesc = prometheus.NewDesc("labctl_queue_jobs",
		"Jobs waiting in the queue.", nil, nil)
	oldestDesc = prometheus.NewDesc("labctl_queue_oldest_job_age_seconds",
		"How long the job waiting longest has waited (0 when none waits).", nil, nil)
	devicesDesc = prometheus.NewDesc("labctl_devices",
		"Devices by device type and state.", []string{"device_type", "state"}, nil)
	deviceStateDesc = prometheus.NewDesc("labctl_device_state",
		"1 for the state each device is in, 0 for the others.", []string{"device", "device_type", "state"}, nil)
	viewersDesc = prometheus.NewDesc("labctl_console_viewers",
		"People watching each device's console.", []string{"device"}, nil)
	tftpTransfersDesc = prometheus.NewDesc("labctl_boot_tftp_transfers_total",
		"TFTP read requests, by result: done, failed (started, did not finish), refused (answered with an error).", []string{"result"}, nil)
	tftpBytesDesc = prometheus.NewDesc("labctl_boot_tftp_sent_bytes_total",
		"Bytes TFTP clients acknowledged.", nil, nil)
	tftpActiveDesc = prometheus.NewDesc("labctl_boot_tftp_active_transfers",
		"TFTP transfers running now.", nil, nil)
	tftpRetransmitsDesc = prometheus.NewDesc("labctl_boot_tftp_retransmits_total",
		"TFTP blocks sent again.", nil, nil)
	httpRequestsDesc = prometheus.NewDesc("labctl_boot_http_requests_total",
		"Boot-server HTTP requests answered.", nil, nil)
	httpErrorsDesc = prometheus.NewDesc("labctl_boot_http_errors_total",
		"Boot-server HTTP requests answered with a status of 400 or more.", nil, nil)
	httpBytesDesc = prometheus.NewDesc("labctl_boot_http_sent_bytes_total",
		"Boot-server HTTP response body bytes.", nil, nil)
	webhookDesc = prometheus.NewDesc("labctl_webhook_deliveries_total",
		"Webhook events by result: delivered, failed (out of tries or refused), dropped (queue full or daemon stopping).", []string{"result"}, nil)
	webhookRetriesDesc = prometheus.NewDesc("labctl_webhook_retries_total",
		"Webhook tries after a failed one.", nil, nil)
)

// scrape collects what is read when Prometheus scrapes.
type scrape struct{ m *Metrics }

func (s scrape) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queuedDesc, oldestDesc, devicesDesc, deviceStateDesc, viewersDesc,
		tftpTransfersDesc, tftpBytesDesc, tftpActiveDesc, tftpRetransmitsDesc, httpRequestsDesc, httpErrorsDesc, httpBytesDesc,
		webhookDesc, webhookRetriesDesc} {
		ch <- d
	}
}

func (s scrape) Collect(ch chan<- prometheus.Metric) {
	src := s.m.src
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if src.Daemon != nil {
		snap := src.Daemon()
		gauge(queuedDesc, float64(snap.Queued))
		age := 0.0
		if !snap.OldestQueued.IsZero() {
			age = max(time.Since(snap.OldestQueued).Seconds(), 0)
		}
		gauge(oldestDesc, age)
		counts := map[[2]string]int{}
		types := map[string]bool{}
		for _, d := range snap.Devices {
			types[d.DeviceType] = true
			counts[[2]string{d.DeviceType, d.State}]++
			for _, st := range deviceStates {
				v := 0.0
				if d.State == st {
					v = 1
				}
				gauge(deviceStateDesc, v, d.Name, d.DeviceType, st)
			}
		}
		for t := range types {
			for _, st := range deviceStates {
				gauge(devicesDesc, float64(counts[[2]string{t, st}]), t, st)
			}
		}
	}
	if src.Consoles != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		list, err := src.Consoles(ctx)
		cancel()
		if err == nil {
			for _, c := range list {
				gauge(viewersDesc, float64(len(c.Viewers)), c.Node)
			}
		}
	}
	if src.Boot != nil {
		b := src.Boot()
		counter(tftpTransfersDesc, b.TFTP.Done, "done")
		counter(tftpTransfersDesc, b.TFTP.Failed, "failed")
		counter(tftpTransfersDesc, b.TFTP.Refused, "refused")
		counter(tftpBytesDesc, b.TFTP.Bytes)
		gauge(tftpActiveDesc, float64(b.TFTP.Active))
		counter(tftpRetransmitsDesc, b.TFTP.Retransmits)
		counter(httpRequestsDesc, b.HTTP.Requests)
		counter(httpErrorsDesc, b.HTTP.Errors)
		counter(httpBytesDesc, b.HTTP.Bytes)
	}
	if src.Webhooks != nil {
		w := src.Webhooks()
		counter(webhookDesc, w.Delivered, "delivered")
		counter(webhookDesc, w.Failed, "failed")
		counter(webhookDesc, w.Dropped, "dropped")
		counter(webhookRetriesDesc, w.Retried)
	}
}

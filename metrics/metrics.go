// Package metrics is labctl serve's Prometheus metrics: it owns the
// registry, counts what the daemon reports as it happens (it is a
// daemon.Observer), hears the BMC clients (ObserveBMC), and reads the
// queue, the devices, the consoles, the boot server's and the webhooks'
// counters when it is scraped, so that nothing on a data path waits for
// it.
//
// Labels are bounded: device types, outcomes, phases, states, BMC
// operations and console events are fixed sets or come from the lab file;
// device names appear only on per-device gauges (labctl_device_state,
// labctl_console_viewers), bounded by the lab file's devices like a
// node_exporter's instances, since "which node is offline" is the question
// an alert must answer. Job IDs are never labels.
package metrics

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/netboot"
	"github.com/labctl/labctl/sol"
	"github.com/labctl/labctl/webhooks"
)

// Sources are what a scrape reads; a nil one is left out.
type Sources struct {
	Daemon   func() daemon.Snapshot
	Consoles func(context.Context) ([]labctl.ConsoleInfo, error)
	Boot     func() netboot.Stats
	Webhooks func() webhooks.Stats
}

// Metrics holds the registry and the metrics. Make it with New.
type Metrics struct {
	reg *prometheus.Registry
	src Sources

	jobsStarted   *prometheus.CounterVec
	jobsFinished  *prometheus.CounterVec
	queueWait     *prometheus.HistogramVec
	phaseDuration *prometheus.HistogramVec
	healthChecks  *prometheus.CounterVec
	bmcDuration   *prometheus.HistogramVec
	bmcErrors     *prometheus.CounterVec
	console       *prometheus.CounterVec
	imageBytes    *prometheus.CounterVec
	imageDuration *prometheus.HistogramVec
}

// Phases are the pipeline's phases, the values of the phase label.
var Phases = []string{"deploy", "boot", "test", "save", "finalize"}

// New makes the metrics and registers them, with the Go runtime's and the
// process's.
func New(src Sources) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), src: src}
	m.jobsStarted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "labctl_jobs_started_total", Help: "Jobs that started on a device, by device type.",
	}, []string{"device_type"})
	m.jobsFinished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "labctl_jobs_finished_total", Help: "Jobs that ended, by device type and outcome (complete, failed, incomplete, canceled).",
	}, []string{"device_type", "outcome"})
	m.queueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "labctl_queue_wait_seconds", Help: "Time jobs waited in the queue, from submit to start, by device type.",
		Buckets: []float64{0.1, 1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400},
	}, []string{"device_type"})
	m.phaseDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "labctl_job_phase_duration_seconds", Help: "Duration of job phases (deploy, boot, test, finalize), by device type.",
		Buckets: []float64{0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
	}, []string{"device_type", "phase"})
	m.healthChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "labctl_health_checks_total", Help: "Health checks that ended, by device type and result (pass, fail).",
	}, []string{"device_type", "result"})
	m.bmcDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "labctl_bmc_request_duration_seconds", Help: "IPMI requests to BMCs, retries included, by operation.",
		Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30},
	}, []string{"op"})
	m.bmcErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "labctl_bmc_request_errors_total", Help: "IPMI requests to BMCs that failed after their retries, by operation.",
	}, []string{"op"})
	m.console = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "labctl_console_session_events_total", Help: "Console (SOL) sessions that were lost, reconnected, or given up on.",
	}, []string{"event"})
	m.imageBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "labctl_image_written_bytes_total", Help: "Image bytes streamed to nodes while deploying, by device type.",
	}, []string{"device_type"})
	m.imageDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "labctl_image_write_duration_seconds", Help: "Time images took to stream to nodes, by device type (rate of bytes over this is the write throughput).",
		Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600},
	}, []string{"device_type"})
	for _, c := range []*prometheus.CounterVec{m.console} {
		for _, e := range []sol.SessionChange{sol.SessionLost, sol.SessionReconnected, sol.SessionGaveUp} {
			c.WithLabelValues(string(e))
		}
	}
	m.reg.MustRegister(m.jobsStarted, m.jobsFinished, m.queueWait, m.phaseDuration, m.healthChecks,
		m.bmcDuration, m.bmcErrors, m.console, m.imageBytes, m.imageDuration,
		scrape{m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 30 * time.Second})
}

// Registry is the registry, for tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

var _ daemon.Observer = (*Metrics)(nil)

// JobStarted implements daemon.Observer.
func (m *Metrics) JobStarted(s daemon.JobStart) {
	m.jobsStarted.WithLabelValues(s.DeviceType).Inc()
	m.queueWait.WithLabelValues(s.DeviceType).Observe(s.Waited.Seconds())
}

// JobEnded implements daemon.Observer.
func (m *Metrics) JobEnded(e daemon.JobEnd) {
	m.jobsFinished.WithLabelValues(e.DeviceType, e.Outcome).Inc()
	for _, p := range e.Phases {
		if slices.Contains(Phases, p.Name) {
			m.phaseDuration.WithLabelValues(e.DeviceType, p.Name).Observe(p.Duration.Seconds())
		}
	}
	if e.Image != nil && e.Image.Done > 0 {
		m.imageBytes.WithLabelValues(e.DeviceType).Add(float64(e.Image.Done))
		m.imageDuration.WithLabelValues(e.DeviceType).Observe(e.Image.Elapsed.Seconds())
	}
}

// DeviceChanged implements daemon.Observer: device states are read when
// scraped.
func (m *Metrics) DeviceChanged(daemon.DeviceChange) {}

// HealthChecked implements daemon.Observer.
func (m *Metrics) HealthChecked(c daemon.HealthCheck) {
	result := "fail"
	if c.Health.OK {
		result = "pass"
	}
	m.healthChecks.WithLabelValues(c.DeviceType, result).Inc()
}

// ConsoleChanged implements daemon.Observer.
func (m *Metrics) ConsoleChanged(_ string, c sol.SessionChange) {
	m.console.WithLabelValues(string(c)).Inc()
}

// ObserveBMC is a bmc.Observer: one IPMI request and how it went.
func (m *Metrics) ObserveBMC(op string, took time.Duration, err error) {
	m.bmcDuration.WithLabelValues(op).Observe(took.Seconds())
	if err != nil {
		m.bmcErrors.WithLabelValues(op).Inc()
	}
}

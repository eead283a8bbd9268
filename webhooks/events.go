package webhooks

import (
	"encoding/json"
	"time"

	"github.com/labctl/labctl/daemon"
	"github.com/labctl/labctl/devices"
	"github.com/labctl/labctl/sol"
)

var _ daemon.Observer = (*Notifier)(nil)

// Event is the JSON body of a delivery: Job for job.end, Device for
// device.state.
type Event struct {
	Event    string       `json:"event"` // job.end, device.state
	Delivery string       `json:"delivery"`
	Time     time.Time    `json:"time"`
	Lab      string       `json:"lab"`
	Job      *JobEvent    `json:"job,omitempty"`
	Device   *DeviceEvent `json:"device,omitempty"`
}

// JobEvent is a job that ended.
type JobEvent struct {
	ID         int64        `json:"id"`
	Name       string       `json:"name"`
	Submitter  string       `json:"submitter"`
	Device     string       `json:"device,omitempty"`
	DeviceType string       `json:"device_type,omitempty"`
	Outcome    string       `json:"outcome"`
	Reason     string       `json:"reason,omitempty"`
	Submitted  time.Time    `json:"submitted"`
	Started    time.Time    `json:"started,omitzero"`
	Finished   time.Time    `json:"finished"`
	Phases     []PhaseEvent `json:"phases,omitempty"`
}

// PhaseEvent is one phase of a job and its duration.
type PhaseEvent struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// DeviceEvent is a device's change of state.
type DeviceEvent struct {
	Name       string    `json:"name"`
	DeviceType string    `json:"device_type"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Reason     string    `json:"reason,omitempty"`
	Since      time.Time `json:"since"`
}

// JobEnded implements daemon.Observer: the lab's job.end receivers and
// the job's notify URLs get it.
func (n *Notifier) JobEnded(e daemon.JobEnd) {
	je := &JobEvent{ID: e.ID, Name: e.Name, Submitter: e.Submitter, Device: e.Device, DeviceType: e.DeviceType,
		Outcome: e.Outcome, Reason: e.Reason, Submitted: e.Submitted, Started: e.Started, Finished: e.Finished}
	for _, p := range e.Phases {
		je.Phases = append(je.Phases, PhaseEvent{Name: p.Name, Seconds: p.Duration.Seconds(), Error: p.Error})
	}
	id, body := n.body(devices.EventJobEnd, Event{Job: je})
	for _, h := range n.cfg.Hooks {
		if h.wants(devices.EventJobEnd) {
			n.send(h.URL, n.cfg.Client, h.Secret, devices.EventJobEnd, body, id)
		}
	}
	for _, u := range e.Notify {
		n.send(u, n.cfg.JobClient, n.cfg.JobSecret, devices.EventJobEnd, body, id)
	}
}

// DeviceChanged implements daemon.Observer: the lab's device.state
// receivers get it.
func (n *Notifier) DeviceChanged(c daemon.DeviceChange) {
	var id string
	var body []byte
	for _, h := range n.cfg.Hooks {
		if !h.wants(devices.EventDeviceState) {
			continue
		}
		if body == nil {
			id, body = n.body(devices.EventDeviceState, Event{Device: &DeviceEvent{Name: c.Device, DeviceType: c.DeviceType,
				From: c.From, To: c.To, Reason: c.Reason, Since: c.At}})
		}
		n.send(h.URL, n.cfg.Client, h.Secret, devices.EventDeviceState, body, id)
	}
}

// JobStarted implements daemon.Observer: no event.
func (n *Notifier) JobStarted(daemon.JobStart) {}

// HealthChecked implements daemon.Observer: no event (a failed check
// shows as the device going offline).
func (n *Notifier) HealthChecked(daemon.HealthCheck) {}

// ConsoleChanged implements daemon.Observer: no event.
func (n *Notifier) ConsoleChanged(string, sol.SessionChange) {}

// body fills in the event's common fields and encodes it.
func (n *Notifier) body(event string, e Event) (string, []byte) {
	e.Event, e.Delivery, e.Time, e.Lab = event, newID(), time.Now().UTC(), n.cfg.Lab
	b, _ := json.Marshal(e) // plain fields: cannot fail
	return e.Delivery, b
}

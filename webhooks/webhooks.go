// Package webhooks posts the lab's events to HTTP receivers: a job's end
// and a device's change of state, as JSON, signed with HMAC-SHA256. The
// lab file's [[webhooks]] get the events they ask for; a job's notify URLs
// get its end. A Notifier is a daemon.Observer: it queues the event and
// returns, so a slow or dead receiver never holds up a job or the daemon.
//
// Each receiver has its own bounded queue and one sender: an event is
// tried up to Attempts times with a doubling backoff; an event that finds
// its receiver's queue full, or that is still queued when the daemon
// stops, is dropped (counted and logged). Job receivers are dialed through
// the jobs' outbound-address rule (dispatcher.ImagePolicy.HTTPClient);
// the lab's own receivers are the admin's choice and are not restricted.
//
// Every request carries:
//
//	Content-Type: application/json
//	X-Labctl-Event: job.end | device.state
//	X-Labctl-Delivery: an ID unique to the event (the same on each retry)
//	X-Labctl-Timestamp: Unix seconds when this attempt was signed
//	X-Labctl-Signature: sha256=HEX(HMAC-SHA256(secret, TIMESTAMP + "." + BODY))
//
// A receiver recomputes the signature over the timestamp and the raw body,
// compares it in constant time, refuses a timestamp more than a few
// minutes away from its clock (a replayed request), and drops a delivery
// ID it has already handled (a retry whose answer was lost).
package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Header names of a delivery.
const (
	HeaderEvent     = "X-Labctl-Event"
	HeaderDelivery  = "X-Labctl-Delivery"
	HeaderTimestamp = "X-Labctl-Timestamp"
	HeaderSignature = "X-Labctl-Signature"
)

// Sign returns the X-Labctl-Signature value of body signed at timestamp
// (Unix seconds) with secret.
func Sign(secret []byte, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a delivery's signature and that its timestamp is within
// maxAge of now: what a receiver written in Go does.
func Verify(secret []byte, h http.Header, body []byte, now time.Time, maxAge time.Duration) error {
	ts, err := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("webhook: no valid %s header", HeaderTimestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > maxAge || d < -maxAge {
		return fmt.Errorf("webhook: timestamp %d is %s away from now: refused as a replay", ts, d.Round(time.Second))
	}
	if !hmac.Equal([]byte(h.Get(HeaderSignature)), []byte(Sign(secret, ts, body))) {
		return fmt.Errorf("webhook: signature does not match")
	}
	return nil
}

// Config says how a Notifier delivers.
type Config struct {
	// Hooks are the lab's receivers ([[webhooks]]).
	Hooks []Hook
	// JobSecret signs the events sent to jobs' notify URLs.
	JobSecret []byte
	// JobClient sends to jobs' notify URLs: dispatcher.ImagePolicy's
	// HTTPClient, which refuses addresses jobs may not reach.
	JobClient *http.Client
	// Client sends to the lab's receivers; nil means one with no proxy.
	Client *http.Client
	// Lab is the lab's name, in every event.
	Lab string
	Log *slog.Logger
	// Attempts bounds the tries of one event (default 5); Backoff is the
	// wait after the first failure, doubled after each (default 2 s, at
	// most a minute); Timeout bounds one try (default 10 s).
	Attempts int
	Backoff  time.Duration
	Timeout  time.Duration
	// QueueSize bounds the events waiting for one receiver (default 100);
	// MaxReceivers bounds the receivers with a sender at once (default 64:
	// job URLs come and go; a sender idle for a minute ends).
	QueueSize    int
	MaxReceivers int
}

// Hook is one of the lab's receivers.
type Hook struct {
	URL    string
	Secret []byte
	// Events it gets (devices.EventJobEnd, ...); empty means all.
	Events []string
}

func (h Hook) wants(event string) bool {
	if len(h.Events) == 0 {
		return true
	}
	for _, e := range h.Events {
		if e == event {
			return true
		}
	}
	return false
}

func (c Config) withDefaults() Config {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Attempts <= 0 {
		c.Attempts = 5
	}
	if c.Backoff <= 0 {
		c.Backoff = 2 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 100
	}
	if c.MaxReceivers <= 0 {
		c.MaxReceivers = 64
	}
	if c.Client == nil {
		c.Client = &http.Client{Transport: &http.Transport{Proxy: nil, ResponseHeaderTimeout: c.Timeout}}
	}
	if c.JobClient == nil {
		c.JobClient = c.Client
	}
	return c
}

// Stats count a Notifier's deliveries, for metrics.
type Stats struct {
	Delivered int64 // answered 2xx
	Retried   int64 // tries after a failed one
	Failed    int64 // given up: every try failed, or the receiver refused it (4xx)
	Dropped   int64 // never tried to the end: queue full, too many receivers, daemon stopped
}

// Notifier delivers events. Create it with New; Close it when the daemon
// has stopped.
type Notifier struct {
	cfg  Config
	log  *slog.Logger
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu        sync.Mutex
	receivers map[string]*receiver // by URL
	closed    bool

	delivered, retried, failed, dropped atomic.Int64
}

// New returns a Notifier made of cfg.
func New(cfg Config) *Notifier {
	cfg = cfg.withDefaults()
	ctx, stop := context.WithCancel(context.Background())
	return &Notifier{cfg: cfg, log: cfg.Log, ctx: ctx, stop: stop, receivers: map[string]*receiver{}}
}

// Stats returns the delivery counters.
func (n *Notifier) Stats() Stats {
	return Stats{Delivered: n.delivered.Load(), Retried: n.retried.Load(), Failed: n.failed.Load(), Dropped: n.dropped.Load()}
}

// Close stops the senders: a try in flight is abandoned, queued events
// are dropped (and counted).
func (n *Notifier) Close() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.stop()
	n.wg.Wait()
}

// receiver is one URL's queue and sender.
type receiver struct {
	url    string
	client *http.Client
	queue  chan delivery
}

// delivery is one event for one receiver.
type delivery struct {
	id     string
	event  string
	body   []byte
	secret []byte
}

// send queues an event for url; it never waits.
func (n *Notifier) send(url string, client *http.Client, secret []byte, event string, body []byte, id string) {
	d := delivery{id: id, event: event, body: body, secret: secret}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		n.drop(url, d, "the daemon is stopping")
		return
	}
	r := n.receivers[url]
	if r == nil {
		if len(n.receivers) >= n.cfg.MaxReceivers {
			n.drop(url, d, fmt.Sprintf("%d receivers have events on their way already", len(n.receivers)))
			return
		}
		r = &receiver{url: url, client: client, queue: make(chan delivery, n.cfg.QueueSize)}
		n.receivers[url] = r
		n.wg.Add(1)
		go n.run(r)
	}
	select {
	case r.queue <- d:
	default:
		n.drop(url, d, fmt.Sprintf("its queue is full (%d events): the receiver is down or slow", n.cfg.QueueSize))
	}
}

func (n *Notifier) drop(url string, d delivery, why string) {
	n.dropped.Add(1)
	n.log.Warn("webhook dropped", "url", url, "event", d.event, "delivery", d.id, "why", why)
}

// idleEnd is how long a receiver's sender waits for an event before it
// ends (it is made again by the next event).
const idleEnd = time.Minute

// run sends a receiver's events in order until it idles or the Notifier
// closes.
func (n *Notifier) run(r *receiver) {
	defer n.wg.Done()
	idle := time.NewTimer(idleEnd)
	defer idle.Stop()
	for {
		select {
		case d := <-r.queue:
			n.deliver(r, d)
			idle.Reset(idleEnd)
		case <-idle.C:
			n.mu.Lock()
			if len(r.queue) > 0 {
				n.mu.Unlock()
				idle.Reset(idleEnd)
				continue
			}
			delete(n.receivers, r.url)
			n.mu.Unlock()
			return
		case <-n.ctx.Done():
			for {
				select {
				case d := <-r.queue:
					n.drop(r.url, d, "the daemon stopped")
				default:
					return
				}
			}
		}
	}
}

// deliver tries one event until it is taken, refused, or out of tries.
func (n *Notifier) deliver(r *receiver, d delivery) {
	wait := n.cfg.Backoff
	for try := 1; ; try++ {
		status, err := n.try(r, d)
		if err == nil {
			n.delivered.Add(1)
			n.log.Debug("webhook delivered", "url", r.url, "event", d.event, "delivery", d.id, "try", try)
			return
		}
		permanent := status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
		if permanent || try >= n.cfg.Attempts || n.ctx.Err() != nil {
			n.failed.Add(1)
			n.log.Warn("webhook not delivered", "url", r.url, "event", d.event, "delivery", d.id, "tries", try, "err", err)
			return
		}
		n.log.Debug("webhook retry", "url", r.url, "event", d.event, "delivery", d.id, "try", try, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
			n.failed.Add(1)
			n.log.Warn("webhook not delivered: the daemon stopped", "url", r.url, "event", d.event, "delivery", d.id, "tries", try)
			return
		}
		n.retried.Add(1)
		wait = min(2*wait, time.Minute)
	}
}

// try posts the event once, signed now.
func (n *Notifier) try(r *receiver, d delivery) (int, error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(d.body))
	if err != nil {
		return 0, err
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "labctl-webhook")
	req.Header.Set(HeaderEvent, d.event)
	req.Header.Set(HeaderDelivery, d.id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(d.secret, ts, d.body))
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// newID is a delivery ID: 16 random bytes in hex.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

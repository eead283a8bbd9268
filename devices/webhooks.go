package devices

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/labctl/labctl/internal/tomlfile"
)

// Webhook events: what a [[webhooks]] entry may subscribe to.
const (
	EventJobEnd      = "job.end"      // a job ended (any outcome)
	EventDeviceState = "device.state" // a device changed state
)

// WebhookEvents are the events a webhook may ask for.
var WebhookEvents = []string{EventJobEnd, EventDeviceState}

// Webhook is a [[webhooks]] entry of the lab file: an http(s) URL the
// daemon posts events to, signed with a secret (HMAC-SHA256).
type Webhook struct {
	URL string `toml:"url"`
	// The signing secret comes from a file (relative to the lab file;
	// made absolute when loaded) or an environment variable, read by
	// [Webhook.Secret].
	SecretFile string `toml:"secret_file"`
	SecretEnv  string `toml:"secret_env"`
	// Events are the events it gets (EventJobEnd, EventDeviceState);
	// empty means all.
	Events []string `toml:"events"`
}

// Secret reads the webhook's signing secret.
func (w Webhook) Secret() (Secret, error) {
	s, err := readSecret(w.SecretFile, w.SecretEnv)
	if err != nil {
		return Secret{}, fmt.Errorf("webhook %s: %w", w.URL, err)
	}
	return s, nil
}

// Wants reports whether the webhook gets the event.
func (w Webhook) Wants(event string) bool {
	return len(w.Events) == 0 || slices.Contains(w.Events, event)
}

// MaxWebhooks bounds the [[webhooks]] of a lab.
const MaxWebhooks = 32

func checkWebhooks(doc *tomlfile.Document, dir string, hooks []Webhook) {
	if len(hooks) > MaxWebhooks {
		doc.Problemf("webhooks", "%d webhooks: give at most %d", len(hooks), MaxWebhooks)
	}
	for i := range hooks {
		w := &hooks[i]
		key := fmt.Sprintf("webhooks[%d]", i)
		u, err := url.Parse(w.URL)
		switch {
		case w.URL == "":
			doc.Problemf(key+".url", "required: the http(s) URL events are posted to")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "":
			doc.Problemf(key+".url", "%q is not an http:// or https:// URL with a host", w.URL)
		case u.User != nil:
			doc.Problemf(key+".url", "%q holds user information: the receiver checks the signature instead", w.URL)
		case slices.ContainsFunc(hooks[:i], func(o Webhook) bool { return o.URL == w.URL }):
			doc.Problemf(key+".url", "%q is listed twice", w.URL)
		}
		checkSecretSource(doc, key, "secret", dir, &w.SecretFile, w.SecretEnv, "required: a secret_file or a secret_env (the key events are signed with)")
		for j, e := range w.Events {
			if !slices.Contains(WebhookEvents, e) {
				doc.Problemf(fmt.Sprintf("%s.events[%d]", key, j), "%q is not an event: use %s", e, strings.Join(WebhookEvents, " or "))
			}
		}
	}
}

// Notify is the lab's [notify] table: the secret that signs the events
// sent to jobs' notify URLs (their receivers check it as the lab's
// [[webhooks]] receivers check theirs). A lab without one refuses jobs
// that have notify URLs.
type Notify struct {
	SecretFile string `toml:"secret_file"`
	SecretEnv  string `toml:"secret_env"`
}

// On reports whether the lab signs job notifications.
func (n Notify) On() bool { return n.SecretFile != "" || n.SecretEnv != "" }

// Secret reads the signing secret.
func (n Notify) Secret() (Secret, error) {
	s, err := readSecret(n.SecretFile, n.SecretEnv)
	if err != nil {
		return Secret{}, fmt.Errorf("[notify] secret: %w", err)
	}
	return s, nil
}

func (n *Notify) check(doc *tomlfile.Document, dir string) {
	checkSecretSource(doc, "notify", "secret", dir, &n.SecretFile, n.SecretEnv, "")
}

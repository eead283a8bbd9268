package jobs

import (
	"bytes"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/labctl/labctl/internal/tomlfile"
)

// MaxNotify bounds the notify URLs of one job.
const MaxNotify = 8

// CheckNotifyURL reports what is wrong with a notify URL, if anything: it
// is an absolute http:// or https:// URL with a host, without user
// information (a secret in a URL ends up in logs), of at most 2048 bytes.
func CheckNotifyURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case len(s) > 2048:
		return fmt.Errorf("a URL of %d bytes is too long (2048 at most)", len(s))
	case err != nil:
		return fmt.Errorf("%q is not a URL", s)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q is not an http:// or https:// URL", s)
	case u.Hostname() == "":
		return fmt.Errorf("URL %q has no host", s)
	case u.User != nil:
		return fmt.Errorf("URL %q holds user information: the receiver checks the signature instead", s)
	case strings.ContainsAny(s, "\"\\ \t\r\n"):
		return fmt.Errorf("URL %q holds spaces, quotes or backslashes", s)
	}
	return nil
}

func checkNotify(doc *tomlfile.Document, urls []string) {
	if len(urls) > MaxNotify {
		doc.Problemf("notify", "%d URLs: give at most %d", len(urls), MaxNotify)
	}
	for i, u := range urls {
		key := fmt.Sprintf("notify[%d]", i)
		if err := CheckNotifyURL(u); err != nil {
			doc.Problemf(key, "%v", err)
		} else if slices.Contains(urls[:i], u) {
			doc.Problemf(key, "%q is listed twice", u)
		}
	}
}

// WithNotify returns a job file's text with notify = urls added (what
// `labctl submit --notify` sends), so that the URLs are part of the job as
// stored and survive a daemon restart. A file that has notify already is
// refused: the URLs go in one place. The line goes first (top-level keys
// come before tables), so the daemon's line numbers for that text are one
// more than the file's.
func WithNotify(name string, text []byte, dir string, urls []string) ([]byte, error) {
	if len(urls) == 0 {
		return text, nil
	}
	j, err := Parse(name, text, dir)
	if err != nil {
		return nil, err
	}
	if len(j.Notify) > 0 {
		return nil, fmt.Errorf("%s:%d: notify is set in the job file: give the URLs there or with --notify, not both", name, j.Line("notify"))
	}
	for _, u := range urls {
		if err := CheckNotifyURL(u); err != nil {
			return nil, fmt.Errorf("--notify: %w", err)
		}
	}
	quoted := make([]string, len(urls))
	for i, u := range urls {
		quoted[i] = strconv.Quote(u) // checked: no quotes, backslashes or control characters
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "notify = [%s]\n", strings.Join(quoted, ", "))
	b.Write(text)
	out := b.Bytes()
	if _, err := Parse(name, out, dir); err != nil {
		return nil, err
	}
	return out, nil
}

package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl"
)

// Client talks to a lab daemon.
type Client struct {
	base  *url.URL
	token string
	tls   *tls.Config // nil: the system's roots
	http  *http.Client
	// Timeout bounds each request but the long ones (event streams, health
	// checks, Online, Cancel, Power, SetBootDevice: the daemon bounds those)
	// when ctx has no deadline; 0 means 1 minute.
	Timeout time.Duration
	// OnBehalf sends each request for the caller in its ctx
	// (labctl.CallerFrom, RoleFrom): one host of a lab forwarding to
	// another, with the lab's host token (see Token.Host).
	OnBehalf bool
	// Peer, when set, is the name of the lab host this client reaches (a
	// host forwarding to another): a request that cannot reach it fails
	// with labctl.ErrUnavailable naming that host, which the forwarding
	// host answers as 503 with the reason.
	Peer string
	// Trust says, in the error of a certificate the client does not
	// accept, what it checks certificates against (e.g. "the CA file X").
	Trust string
}

// authorize sets a request's credentials.
func (c *Client) authorize(ctx context.Context, h http.Header) {
	h.Set("Authorization", "Bearer "+c.token)
	if c.OnBehalf {
		if who := labctl.CallerFrom(ctx); who != "" {
			h.Set(OnBehalfHeader, who+" "+string(labctl.RoleFrom(ctx)))
		}
	}
}

// NewClient returns a client of the daemon at server ("http://host:port",
// "https://host:port"; "host:port" means http) that sends token, checking
// an https daemon's certificate with tlsConfig (nil: the system's roots;
// see ClientTLS).
func NewClient(server, token string, tlsConfig *tls.Config) (*Client, error) {
	if server == "" {
		return nil, errors.New("no server: set --server, LABCTL_SERVER or server in the client config")
	}
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, fmt.Errorf("server %q: want http://HOST:PORT", server)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if tlsConfig != nil && u.Scheme != "https" {
		return nil, fmt.Errorf("server %s: a CA file or pin is for https:// servers", server)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = tlsConfig
	return &Client{base: u, token: token, tls: tlsConfig, http: &http.Client{Transport: t}}, nil
}

// Server is the daemon's URL.
func (c *Client) Server() string { return c.base.String() }

// Error is an error reply of the daemon. It wraps the API error of its
// status (ErrNotFound, ErrBusy, ...), so errors.Is works on it.
type Error struct {
	Status  int
	Message string
	kind    error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the API error of the status.
func (e *Error) Unwrap() error { return e.kind }

// do sends a request and decodes a JSON reply into out (if not nil).
func (c *Client) do(ctx context.Context, long bool, method, path string, query url.Values, in, out any) error {
	if _, ok := ctx.Deadline(); !ok && !long {
		timeout := c.Timeout
		if timeout <= 0 {
			timeout = time.Minute
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	resp, err := c.send(ctx, method, path, query, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: reply: %w", method, path, err)
	}
	return nil
}

// send sends a request and returns a 2xx response; other statuses become
// an *Error.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, in any) (*http.Response, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.authorize(ctx, req.Header)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("daemon %s: %w", c.base.Host, context.Cause(ctx))
		}
		return nil, c.unreachable("", unwrapURLError(err))
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	return nil, responseError(resp)
}

// unreachable is the error of a request that did not reach the daemon
// (what it was for, or ""): it names the daemon, or the lab host Peer,
// and for a certificate the client does not accept, what it trusts.
func (c *Client) unreachable(what string, err error) error {
	var cert *tls.CertificateVerificationError
	if errors.As(err, &cert) && c.Trust != "" {
		err = fmt.Errorf("%w (checked against %s)", err, c.Trust)
	}
	if c.Peer != "" {
		return fmt.Errorf("%w: host %s at %s%s: %w", labctl.ErrUnavailable, c.Peer, c.base, what, err)
	}
	return fmt.Errorf("daemon %s%s: %w", c.base.Host, what, err)
}

// responseError turns a reply that is not a success into an *Error (and
// closes its body).
func responseError(resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb errorBody
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	}
	if msg == "" {
		msg = resp.Status
	}
	kind := errorOf(resp.StatusCode)
	if kind == nil {
		kind = fmt.Errorf("HTTP %s", resp.Status)
	}
	return &Error{Status: resp.StatusCode, Message: msg, kind: kind}
}

// unwrapURLError drops net/url's "Get "http://...": " prefix, which
// repeats what the caller says.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// The client answers for a daemon as the daemon itself would.
var _ labctl.Service = (*Client)(nil)

// Submit submits a job.
func (c *Client) Submit(ctx context.Context, req labctl.SubmitRequest) (labctl.Job, error) {
	var j labctl.Job
	err := c.do(ctx, false, "POST", "/api/v1/jobs", nil, req, &j)
	return j, err
}

// Jobs lists jobs.
func (c *Client) Jobs(ctx context.Context, f labctl.JobFilter) ([]labctl.Job, error) {
	q := url.Values{}
	if len(f.States) > 0 {
		q.Set("state", strings.Join(f.States, ","))
	}
	if f.Device != "" {
		q.Set("device", f.Device)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Before > 0 {
		q.Set("before", strconv.FormatInt(f.Before, 10))
	}
	var list []labctl.Job
	err := c.do(ctx, false, "GET", "/api/v1/jobs", q, nil, &list)
	return list, err
}

// Job returns one job.
func (c *Client) Job(ctx context.Context, id int64) (labctl.Job, error) {
	var j labctl.Job
	err := c.do(ctx, false, "GET", jobPath(id, ""), nil, nil, &j)
	return j, err
}

// Cancel cancels a job.
func (c *Client) Cancel(ctx context.Context, id int64) (labctl.Job, error) {
	var j labctl.Job
	err := c.do(ctx, true, "POST", jobPath(id, "/cancel"), nil, struct{}{}, &j)
	return j, err
}

// JobLog opens the job's log as it is now; the caller closes it.
func (c *Client) JobLog(ctx context.Context, id int64) (io.ReadCloser, error) {
	resp, err := c.send(ctx, "GET", jobPath(id, "/log"), nil, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Artifact opens a file a finished job fetched back.
func (c *Client) Artifact(ctx context.Context, id int64, name string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, "GET", jobPath(id, "/artifacts/"+url.PathEscape(name)), nil, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Resubmit queues a job's file again as a new job.
func (c *Client) Resubmit(ctx context.Context, id int64) (labctl.Job, error) {
	var j labctl.Job
	err := c.do(ctx, false, "POST", jobPath(id, "/resubmit"), nil, struct{}{}, &j)
	return j, err
}

// JUnit returns the JUnit XML of a finished job.
func (c *Client) JUnit(ctx context.Context, id int64) ([]byte, error) {
	resp, err := c.send(ctx, "GET", jobPath(id, "/junit"), nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("job %d JUnit: %w", id, err)
	}
	return b, nil
}

// Follow streams the job's events as opts says, calling fn for each,
// until the job ends (fn has then seen the End event and Follow returns
// nil), ctx ends, the connection breaks, or fn fails.
func (c *Client) Follow(ctx context.Context, id int64, opts labctl.FollowOptions, fn func(labctl.Event) error) error {
	q := url.Values{}
	if opts.Offset > 0 {
		q.Set("offset", strconv.FormatInt(opts.Offset, 10))
	}
	if opts.NoLog {
		q.Set("log", "false")
	}
	resp, err := c.send(ctx, "GET", jobPath(id, "/events"), q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var e labctl.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("job %d events: %w", id, err)
		}
		if err := fn(e); err != nil {
			return err
		}
		if e.End != nil {
			return nil
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("daemon %s: job %d events: %w", c.base.Host, id, err)
	}
	return fmt.Errorf("daemon %s: job %d events: %w", c.base.Host, id, io.ErrUnexpectedEOF)
}

// Devices lists the devices.
func (c *Client) Devices(ctx context.Context) ([]labctl.Device, error) {
	var list []labctl.Device
	err := c.do(ctx, false, "GET", "/api/v1/devices", nil, nil, &list)
	return list, err
}

// Device returns one device.
func (c *Client) Device(ctx context.Context, name string) (labctl.Device, error) {
	var d labctl.Device
	err := c.do(ctx, false, "GET", devicePath(name, ""), nil, nil, &d)
	return d, err
}

// Maintenance takes a device out of service.
func (c *Client) Maintenance(ctx context.Context, name, reason string) (labctl.Device, error) {
	var d labctl.Device
	err := c.do(ctx, false, "POST", devicePath(name, "/maintenance"), nil, labctl.DeviceRequest{Reason: reason}, &d)
	return d, err
}

// Online puts a device back in service, after a health check.
func (c *Client) Online(ctx context.Context, name string) (labctl.Device, error) {
	var d labctl.Device
	err := c.do(ctx, true, "POST", devicePath(name, "/online"), nil, struct{}{}, &d)
	return d, err
}

// CheckHealth runs a device's health check.
func (c *Client) CheckHealth(ctx context.Context, name string) (labctl.Device, error) {
	var d labctl.Device
	err := c.do(ctx, true, "POST", devicePath(name, "/health"), nil, struct{}{}, &d)
	return d, err
}

// Reserve holds a device for the token's owner, or renews the hold.
func (c *Client) Reserve(ctx context.Context, name string, req labctl.ReserveRequest) (labctl.Device, error) {
	var d labctl.Device
	err := c.do(ctx, false, "POST", devicePath(name, "/reserve"), nil, req, &d)
	return d, err
}

// Release ends a device's reservation.
func (c *Client) Release(ctx context.Context, name string) (labctl.Device, error) {
	var d labctl.Device
	err := c.do(ctx, false, "POST", devicePath(name, "/release"), nil, struct{}{}, &d)
	return d, err
}

// Power runs a power operation on a node.
func (c *Client) Power(ctx context.Context, name string, req labctl.PowerRequest) (labctl.PowerResponse, error) {
	var r labctl.PowerResponse
	err := c.do(ctx, true, "POST", devicePath(name, "/power"), nil, req, &r)
	return r, err
}

// SetBootDevice sets a node's next boot device.
func (c *Client) SetBootDevice(ctx context.Context, name string, req labctl.BootdevRequest) (labctl.BootdevResponse, error) {
	var r labctl.BootdevResponse
	err := c.do(ctx, true, "POST", devicePath(name, "/bootdev"), nil, req, &r)
	return r, err
}

func jobPath(id int64, suffix string) string {
	return "/api/v1/jobs/" + strconv.FormatInt(id, 10) + suffix
}

func devicePath(name, suffix string) string {
	return "/api/v1/devices/" + name + suffix
}

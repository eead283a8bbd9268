package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl"
)

// Token is an API token the server accepts.
type Token struct {
	Name   string // for logs, job submitters and console viewers
	Secret string
	// Role is what the token may do; "" is refused by NewServer.
	Role labctl.Role
	// Host marks the lab-internal credential of a lab of several hosts:
	// a request with it may name the person another host forwards it for
	// (OnBehalfHeader), who then is the caller, with their role (never
	// more than the token's).
	Host bool
}

// OnBehalfHeader carries, on a request one host forwards to another, the
// caller and role the first host authenticated: "NAME ROLE".
const OnBehalfHeader = "Labctl-On-Behalf-Of"

// Config configures a Server.
type Config struct {
	// Addr is the listen address, host:port (port 0 picks one).
	Addr   string
	Tokens []Token
	Log    *slog.Logger
	// MaxBody bounds request bodies; 0 means 1 MiB (a job file is a few KiB).
	MaxBody int64
	// ShutdownGrace bounds the wait for requests in flight when Serve
	// stops; 0 means 5 s.
	ShutdownGrace time.Duration
	// TLS, if set, serves HTTPS (LoadServerTLS, SelfSignedTLS).
	TLS *tls.Config
	// Metrics, if set, serves GET /metrics (Prometheus) to every token,
	// viewers included.
	Metrics http.Handler
	// Browser, if set, lets browsers in (package web): it serves every
	// path outside /api/ and /metrics without a token (its pages and
	// login), and authenticates the API requests that carry no bearer
	// token (its session cookie).
	Browser Browser
	// Routes are more endpoints in the route table, each with the least
	// role that may call it (the web UI's live stream).
	Routes []Route
	// MaxConns bounds the connections open at once (more wait to be
	// accepted); 0 means DefaultMaxConns. MaxConnsPerClient bounds those
	// from one address other than loopback (more are closed); 0 means
	// DefaultMaxConnsPerClient.
	MaxConns, MaxConnsPerClient int
}

// Browser is what lets browsers use the API with a session instead of a
// bearer token.
type Browser interface {
	// ServeHTTP serves the paths outside /api/ and /metrics.
	http.Handler
	// Authenticate returns the token name and role of the session r
	// carries. Its error wraps labctl.ErrUnauthorized when r has no live
	// session, labctl.ErrForbidden when the session may not make this
	// request (a state-changing request without the session's CSRF token
	// or from another origin).
	Authenticate(r *http.Request) (name string, role labctl.Role, err error)
}

// Route is an endpoint served beside the API's own.
type Route struct {
	Pattern string // as http.ServeMux: "GET /api/v1/stream"
	Role    labctl.Role
	Handler http.Handler
}

// Server serves the API over HTTP.
type Server struct {
	svc    labctl.Service
	cfg    Config
	log    *slog.Logger
	tokens []tokenHash
	ln     net.Listener
	mux    *http.ServeMux
}

type tokenHash struct {
	name string
	role labctl.Role
	host bool
	sum  [sha256.Size]byte
}

// NewServer checks the tokens and binds the listen address.
func NewServer(svc labctl.Service, cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 5 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerClient <= 0 {
		cfg.MaxConnsPerClient = DefaultMaxConnsPerClient
	}
	s := &Server{svc: svc, cfg: cfg, log: cfg.Log}
	if len(cfg.Tokens) == 0 {
		return nil, errors.New("api: no tokens: the lab config needs at least one [[server.tokens]]")
	}
	for _, t := range cfg.Tokens {
		if len(t.Secret) < 8 {
			return nil, fmt.Errorf("api: token %s is shorter than 8 characters", t.Name)
		}
		if !t.Role.Allows(labctl.RoleViewer) {
			return nil, fmt.Errorf("api: token %s has no role (viewer, submitter, operator or admin)", t.Name)
		}
		sum := sha256.Sum256([]byte(t.Secret))
		for _, o := range s.tokens {
			if o.sum == sum {
				// A request would carry both: it would get the last one's
				// role, whatever the other was meant to be.
				return nil, fmt.Errorf("api: tokens %s and %s have the same secret: give each its own", o.name, t.Name)
			}
		}
		s.tokens = append(s.tokens, tokenHash{name: t.Name, role: t.Role, host: t.Host, sum: sum})
	}
	s.routes()
	if cfg.Addr != "" {
		tcp, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("api: listen: %w", err)
		}
		var ln net.Listener = newConnCap(tcp, cfg.MaxConns, cfg.MaxConnsPerClient, cfg.Log)
		if cfg.TLS != nil {
			ln = tls.NewListener(ln, cfg.TLS)
		}
		s.ln = ln
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until ctx ends, then stops: requests in flight (event
// streams included: their context ends) get ShutdownGrace to finish.
func (s *Server) Serve(ctx context.Context) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	<-errc
	return nil
}

// Close releases the listener of a server whose Serve never ran.
func (s *Server) Close() error {
	if s.ln == nil {
		return nil
	}
	return s.ln.Close()
}

// routes registers every endpoint with the least role that may call it:
// the one table that says what each role may do over the API (the daemon
// adds only "a submitter cancels its own jobs", which needs the job).
func (s *Server) routes() {
	m := http.NewServeMux()
	handle := func(pattern string, need labctl.Role, h http.HandlerFunc) {
		m.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := labctl.Authorize(r.Context(), need, r.Method+" "+r.URL.Path); err != nil {
				s.refused(r, labctl.AuditEntry{Action: auditedRoutes[pattern]}, err)
				s.fail(w, r, err)
				return
			}
			h(w, r)
		})
	}
	handle("POST /api/v1/jobs", labctl.RoleSubmitter, s.submit)
	handle("GET /api/v1/jobs", labctl.RoleViewer, s.jobs)
	handle("GET /api/v1/jobs/{id}", labctl.RoleViewer, s.job)
	handle("POST /api/v1/jobs/{id}/cancel", labctl.RoleSubmitter, s.cancel)
	handle("GET /api/v1/jobs/{id}/log", labctl.RoleViewer, s.jobLog)
	handle("GET /api/v1/jobs/{id}/junit", labctl.RoleViewer, s.junit)
	handle("GET /api/v1/jobs/{id}/artifacts/{name...}", labctl.RoleViewer, s.artifact)
	handle("POST /api/v1/jobs/{id}/resubmit", labctl.RoleSubmitter, s.resubmit)
	handle("GET /api/v1/jobs/{id}/events", labctl.RoleViewer, s.events)
	handle("GET /api/v1/devices", labctl.RoleViewer, s.devices)
	handle("GET /api/v1/devices/{name}", labctl.RoleViewer, s.device)
	handle("POST /api/v1/devices/{name}/maintenance", labctl.RoleOperator, s.maintenance)
	handle("POST /api/v1/devices/{name}/online", labctl.RoleOperator, s.online)
	handle("POST /api/v1/devices/{name}/health", labctl.RoleOperator, s.health)
	handle("POST /api/v1/devices/{name}/power", labctl.RoleOperator, s.power)
	handle("POST /api/v1/devices/{name}/bootdev", labctl.RoleOperator, s.bootdev)
	// Reserving is for anyone who may submit; releasing someone else's
	// reservation takes an operator (the daemon checks).
	handle("POST /api/v1/devices/{name}/reserve", labctl.RoleSubmitter, s.reserve)
	handle("POST /api/v1/devices/{name}/release", labctl.RoleSubmitter, s.release)
	// Viewers attach read-only; taking write needs an operator (consoleAttach).
	handle("GET /api/v1/consoles", labctl.RoleViewer, s.consoles)
	handle("GET /api/v1/devices/{name}/console", labctl.RoleViewer, s.console)
	handle("GET /api/v1/devices/{name}/console/attach", labctl.RoleViewer, s.consoleAttach)
	// The audit trail names tokens and their addresses: the operators who
	// run the lab read it, viewers and submitters do not.
	handle("GET /api/v1/audit", labctl.RoleOperator, s.audit)
	// Prometheus scrapes with a viewer token (authorization credentials).
	if s.cfg.Metrics != nil {
		handle("GET /metrics", labctl.RoleViewer, s.cfg.Metrics.ServeHTTP)
	}
	// A browser's terminal: the console over a WebSocket (consolews.go).
	handle("GET /api/v1/devices/{name}/console/ws", labctl.RoleViewer, s.consoleWebSocket)
	for _, rt := range s.cfg.Routes {
		handle(rt.Pattern, rt.Role, rt.Handler.ServeHTTP)
	}
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, fmt.Errorf("%s %s: no such endpoint: %w", r.Method, r.URL.Path, labctl.ErrNotFound))
	})
	s.mux = m
}

// ServeHTTP authenticates the request, then routes it. A panic in a
// handler becomes a 500, never a dead daemon.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("api: handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p)
			s.fail(w, r, errors.New("panic"))
		}
	}()
	if s.cfg.Browser != nil && !apiPath(r.URL.Path) {
		s.cfg.Browser.ServeHTTP(w, r)
		return
	}
	name, role, host, ok := s.authenticate(r)
	if !ok && s.cfg.Browser != nil && r.Header.Get("Authorization") == "" {
		var err error
		if name, role, err = s.cfg.Browser.Authenticate(r); err != nil {
			if errors.Is(err, labctl.ErrForbidden) {
				s.log.Warn("api: browser request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			}
			s.fail(w, r, err)
			return
		}
		ok = true
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="labctl"`)
		s.fail(w, r, fmt.Errorf("%w: a valid bearer token is required (LABCTL_TOKEN, --token-file or the client config)", labctl.ErrUnauthorized))
		return
	}
	if v := r.Header.Get(OnBehalfHeader); v != "" {
		if !host {
			s.fail(w, r, fmt.Errorf("%w: %s is for the lab's hosts only", labctl.ErrForbidden, OnBehalfHeader))
			return
		}
		who, as, _ := strings.Cut(v, " ")
		asRole := labctl.Role(as)
		if who == "" || len(who) > 256 || !asRole.Allows(labctl.RoleViewer) || !role.Allows(asRole) {
			s.fail(w, r, fmt.Errorf("%w: %s: want NAME ROLE", labctl.ErrInvalid, OnBehalfHeader))
			return
		}
		name, role = who, asRole
	}
	r = r.WithContext(labctl.WithRemote(labctl.WithRole(labctl.WithCaller(r.Context(), name), role), r.RemoteAddr))
	s.log.Debug("api request", "method", r.Method, "path", r.URL.Path, "caller", name, "role", role)
	s.mux.ServeHTTP(w, r)
}

// apiPath reports whether path is the API's (bearer token or session),
// not the browser UI's.
func apiPath(path string) bool {
	return path == "/metrics" || path == "/api" || strings.HasPrefix(path, "/api/")
}

// authenticate compares the bearer token with every configured token in
// constant time (the digests have one length, so their length leaks
// nothing either) and returns the matching token's name and role.
func (s *Server) authenticate(r *http.Request) (string, labctl.Role, bool, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", "", false, false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	var name string
	var role labctl.Role
	var host bool
	match := 0
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			name, role, host, match = t.name, t.role, t.host, 1
		}
	}
	return name, role, host, match == 1
}

// fail writes err as {"error": ...} with its status. Errors the API does
// not know are logged and reach the client as "internal error".
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		s.log.Error("api: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error (see the daemon's log)"
	}
	writeJSON(w, status, errorBody{Error: msg})
}

// listLimit reads a listing's limit parameter: 0 (the server's default)
// to 100000.
func listLimit(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 100000 {
		return 0, fmt.Errorf("%w: limit %q: want a number from 0 to 100000", labctl.ErrInvalid, v)
	}
	return n, nil
}

// replyList writes a listing, [] rather than null when it is empty, or
// the error.
func replyList[T any](s *Server, w http.ResponseWriter, r *http.Request, list []T, err error) {
	if list == nil {
		list = []T{}
	}
	s.reply(w, r, list, err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// Compact: indenting took a quarter of the daemon's CPU on the web
	// UI's reads of the lab (labctl -o json indents what it prints).
	json.NewEncoder(w).Encode(v)
}

// decodeBody decodes a JSON request body into v strictly: one JSON value,
// no unknown fields, at most MaxBody bytes. An empty body leaves v as it is.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return fmt.Errorf("%w: Content-Type %q: send application/json", labctl.ErrInvalid, ct)
		}
	}
	return DecodeJSON(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody), v)
}

// DecodeJSON decodes one JSON value from r into v, strictly: unknown
// fields, trailing data and wrong types are ErrInvalid, a body over a
// http.MaxBytesReader's limit ErrTooLarge; an empty body leaves v alone.
func DecodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the JSON value")
			var mbe *http.MaxBytesError
			if errors.As(terr, &mbe) {
				err = terr
			}
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil, err == io.EOF:
		return nil
	case errors.As(err, &mbe):
		return fmt.Errorf("%w: over %d bytes", ErrTooLarge, mbe.Limit)
	}
	return fmt.Errorf("%w: request body: %v", labctl.ErrInvalid, err)
}

func jobID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%w: job ID %q: want a positive number", labctl.ErrInvalid, r.PathValue("id"))
	}
	return id, nil
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	var req labctl.SubmitRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	job, err := s.svc.Submit(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, job)
}

func (s *Server) jobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := labctl.JobFilter{Device: q.Get("device")}
	for _, v := range q["state"] {
		for st := range strings.SplitSeq(v, ",") {
			switch st {
			case labctl.JobQueued, labctl.JobRunning, labctl.JobFinished:
				f.States = append(f.States, st)
			default:
				s.fail(w, r, fmt.Errorf("%w: state %q: want queued, running or finished", labctl.ErrInvalid, st))
				return
			}
		}
	}
	limit, err := listLimit(q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f.Limit = limit
	if v := q.Get("before"); v != "" {
		if f.Before, err = strconv.ParseInt(v, 10, 64); err != nil || f.Before <= 0 {
			s.fail(w, r, fmt.Errorf("%w: before %q: want a job ID", labctl.ErrInvalid, v))
			return
		}
	}
	list, err := s.svc.Jobs(r.Context(), f)
	replyList(s, w, r, list, err)
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err == nil {
		var job labctl.Job
		if job, err = s.svc.Job(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, job)
			return
		}
	}
	s.fail(w, r, err)
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err == nil {
		err = s.decodeBody(w, r, &struct{}{})
	}
	if err == nil {
		var job labctl.Job
		if job, err = s.svc.Cancel(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, job)
			return
		}
	}
	s.fail(w, r, err)
}

func (s *Server) jobLog(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := s.svc.JobLog(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	io.Copy(w, f)
}

func (s *Server) artifact(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	f, err := s.svc.Artifact(r.Context(), id, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer f.Close()
	// A download, never a page: the node wrote it.
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(name)}))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	io.Copy(w, f)
}

func (s *Server) resubmit(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err == nil {
		err = s.decodeBody(w, r, &struct{}{})
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	job, err := s.svc.Resubmit(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, job)
}

func (s *Server) junit(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	xml, err := s.svc.JUnit(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Write(xml)
}

// events streams the job's events as NDJSON, one flushed line each.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var opts labctl.FollowOptions
	q := r.URL.Query()
	if v := q.Get("offset"); v != "" {
		if opts.Offset, err = strconv.ParseInt(v, 10, 64); err != nil || opts.Offset < 0 {
			s.fail(w, r, fmt.Errorf("%w: offset %q: want a byte offset", labctl.ErrInvalid, v))
			return
		}
	}
	switch v := q.Get("log"); v {
	case "", "true", "1":
	case "false", "0":
		opts.NoLog = true
	default:
		s.fail(w, r, fmt.Errorf("%w: log %q: want true or false", labctl.ErrInvalid, v))
		return
	}
	if _, err := s.svc.Job(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	err = s.svc.Follow(r.Context(), id, opts, func(e labctl.Event) error {
		if err := enc.Encode(e); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && r.Context().Err() == nil {
		s.log.Debug("api: event stream ended", "job", id, "err", err)
	}
}

func (s *Server) devices(w http.ResponseWriter, r *http.Request) {
	list, err := s.svc.Devices(r.Context())
	replyList(s, w, r, list, err)
}

func (s *Server) device(w http.ResponseWriter, r *http.Request) {
	d, err := s.svc.Device(r.Context(), r.PathValue("name"))
	s.reply(w, r, d, err)
}

func (s *Server) maintenance(w http.ResponseWriter, r *http.Request) {
	var req labctl.DeviceRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := s.svc.Maintenance(r.Context(), r.PathValue("name"), req.Reason)
	s.reply(w, r, d, err)
}

func (s *Server) reserve(w http.ResponseWriter, r *http.Request) {
	var req labctl.ReserveRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := s.svc.Reserve(r.Context(), r.PathValue("name"), req)
	s.reply(w, r, d, err)
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	if err := s.decodeBody(w, r, &struct{}{}); err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := s.svc.Release(r.Context(), r.PathValue("name"))
	s.reply(w, r, d, err)
}

func (s *Server) online(w http.ResponseWriter, r *http.Request) {
	if err := s.decodeBody(w, r, &struct{}{}); err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := s.svc.Online(r.Context(), r.PathValue("name"))
	s.reply(w, r, d, err)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if err := s.decodeBody(w, r, &struct{}{}); err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := s.svc.CheckHealth(r.Context(), r.PathValue("name"))
	s.reply(w, r, d, err)
}

func (s *Server) power(w http.ResponseWriter, r *http.Request) {
	var req labctl.PowerRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Op != labctl.PowerStatus {
		if _, err := labctl.ParsePowerOp(req.Op); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	resp, err := s.svc.Power(r.Context(), r.PathValue("name"), req)
	s.reply(w, r, resp, err)
}

func (s *Server) bootdev(w http.ResponseWriter, r *http.Request) {
	var req labctl.BootdevRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if _, err := labctl.ParseBootDevice(string(req.Device)); err != nil {
		s.fail(w, r, err)
		return
	}
	resp, err := s.svc.SetBootDevice(r.Context(), r.PathValue("name"), req)
	s.reply(w, r, resp, err)
}

func (s *Server) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// Package web is labctl serve's browser UI: the pages (HTML and
// JavaScript embedded in the binary, xterm.js among them), browser
// login with a session cookie and CSRF tokens, and the live stream of
// lab events. It implements api.Browser: the API stays the one place
// that decides what a caller may do, whether the caller is a bearer
// token or a browser's session.
package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
)

//go:embed assets
var assets embed.FS

// Config configures the UI.
type Config struct {
	// Tokens are the API's tokens: a browser logs in with one of them.
	Tokens []api.Token
	// TLS says the daemon serves HTTPS: the cookie is then Secure.
	TLS bool
	// SessionTTL is how long a login lasts; 0 means 12 h.
	SessionTTL time.Duration
	// MaxSessions bounds the live sessions (a login beyond it ends the
	// oldest); 0 means 1000.
	MaxSessions int
	// StreamBuffer is the events a live stream queues before it drops
	// (and counts) them; 0 means 256. MaxStreams bounds the streams at
	// once; 0 means 500.
	StreamBuffer, MaxStreams int
	Log                      *slog.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// UI is the browser UI.
type UI struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	hub      *Hub
	static   *assetsHandler
	// index is the page (index.html) with its script and stylesheet
	// named by version (see assetsHandler).
	index []byte
}

// New makes the UI.
func New(cfg Config) *UI {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1000
	}
	if cfg.StreamBuffer <= 0 {
		cfg.StreamBuffer = 256
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 500
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err)
	}
	static, err := newAssetsHandler(sub)
	if err != nil {
		panic(err)
	}
	index, err := static.versioned("index.html", "/app.js", "/style.css")
	if err != nil {
		panic(err)
	}
	return &UI{
		cfg:      cfg,
		log:      cfg.Log,
		sessions: newSessions(cfg.Tokens, cfg.SessionTTL, cfg.MaxSessions, cfg.Now),
		hub:      NewHub(cfg.StreamBuffer, cfg.MaxStreams),
		static:   static,
		index:    index,
	}
}

// Hub is the live stream's hub: the daemon's observer.
func (u *UI) Hub() *Hub { return u.hub }

// Routes are the UI's endpoints under the API's roles.
func (u *UI) Routes() []api.Route {
	return []api.Route{{Pattern: "GET /api/v1/stream", Role: labctl.RoleViewer, Handler: u.hub}}
}

// Authenticate implements api.Browser: the session of the request's
// cookie; a request that changes something must also come from this
// daemon's origin and carry the session's CSRF token.
func (u *UI) Authenticate(r *http.Request) (string, labctl.Role, error) {
	se, ok := u.current(r)
	if !ok {
		return "", "", errNoSession
	}
	if !safeMethod(r.Method) {
		if err := sameOrigin(r, u.cfg.TLS); err != nil {
			return "", "", err
		}
		if !equalSecret(r.Header.Get(CSRFHeader), se.csrf) {
			return "", "", errCSRF
		}
	}
	return se.name, se.role, nil
}

var (
	errNoSession = errorf(labctl.ErrUnauthorized, "a valid bearer token or a browser session is required (log in at /login)")
	errCSRF      = errorf(labctl.ErrForbidden, "this request changes something and has no valid "+CSRFHeader+" header: send it from labctl's pages")
)

// ServeHTTP implements api.Browser: the pages, login and logout.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// The pages load only their own scripts and styles, talk only to
	// this daemon, and are framed by nobody.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	switch r.URL.Path {
	case "/login":
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			u.serveFile(w, r, "login.html")
		case http.MethodPost:
			u.login(w, r)
		default:
			http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
		}
		return
	case "/logout":
		u.logout(w, r)
		return
	case "/ui/session":
		u.session(w, r)
		return
	case "/", "/index.html":
		if _, ok := u.current(r); !ok {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Type", "text/html; charset=utf-8")
		if r.Method == http.MethodHead {
			return
		}
		w.Write(u.index)
		return
	}
	if !safeMethod(r.Method) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	u.static.ServeHTTP(w, r)
}

func (u *UI) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	r2 := new(http.Request)
	*r2 = *r
	r2.URL = &url.URL{Path: "/" + name}
	u.static.ServeHTTP(w, r2)
}

func (u *UI) current(r *http.Request) (*session, bool) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return nil, false
	}
	return u.sessions.get(c.Value)
}

// maxLoginBody bounds the login form.
const maxLoginBody = 4 << 10

// login takes the form's token (a POST body, never a URL), and sets the
// session cookie. A login from another origin is refused (it would log
// the browser in as someone else).
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	if err := sameOrigin(r, u.cfg.TLS); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "login form: "+err.Error(), http.StatusBadRequest)
		return
	}
	if r.URL.Query().Has("token") {
		http.Error(w, "the token goes in the form's body, never in the URL", http.StatusBadRequest)
		return
	}
	key, se, ok := u.sessions.login(r.PostForm.Get("token"))
	if !ok {
		u.log.Info("web: login refused", "remote", r.RemoteAddr)
		http.Redirect(w, r, "/login?failed=1", http.StatusSeeOther)
		return
	}
	u.log.Info("web: login", "name", se.name, "role", se.role, "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: key, Path: "/",
		Expires: se.expires, MaxAge: int(u.cfg.SessionTTL / time.Second),
		HttpOnly: true, Secure: u.cfg.TLS, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout ends the session (POST with the CSRF token).
func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST", http.StatusMethodNotAllowed)
		return
	}
	if _, _, err := u.Authenticate(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	c, _ := r.Cookie(CookieName)
	u.sessions.logout(c.Value)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: u.cfg.TLS, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// SessionInfo is what the pages know of their login (GET /ui/session).
type SessionInfo struct {
	Name    string      `json:"name"`
	Role    labctl.Role `json:"role"`
	CSRF    string      `json:"csrf"`
	Expires time.Time   `json:"expires"`
}

func (u *UI) session(w http.ResponseWriter, r *http.Request) {
	se, ok := u.current(r)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]string{"error": errNoSession.Error()})
		return
	}
	json.NewEncoder(w).Encode(SessionInfo{Name: se.name, Role: se.role, CSRF: se.csrf, Expires: se.expires})
}

// equalSecret compares a secret a request brings with the one expected,
// in constant time; an empty one never matches.
func equalSecret(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func errorf(kind error, msg string) error { return &kindError{kind: kind, msg: msg} }

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return strings.TrimSpace(e.kind.Error() + ": " + e.msg) }
func (e *kindError) Unwrap() error { return e.kind }

// assetsHandler serves the embedded files, each with an ETag (a hash of
// its content) and "Cache-Control: no-cache": a browser asks again on
// every page load and, while the binary is the same, gets a 304, so a
// new tab neither downloads the scripts again nor compiles them again
// (Chromium keeps compiled code only for scripts in its HTTP cache).
// The page names its own script and stylesheet with their version
// (/app.js?v=HASH): those are immutable, so a page load does not even
// wait for the 304 before it runs its script.
type assetsHandler struct {
	files fs.FS
	serve http.Handler
	etags map[string]string // by URL path
}

func newAssetsHandler(files fs.FS) (*assetsHandler, error) {
	h := &assetsHandler{files: files, serve: http.FileServerFS(files), etags: map[string]string{}}
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h.etags["/"+p] = `"` + hex.EncodeToString(sum[:12]) + `"`
		return nil
	})
	return h, err
}

// versioned is the file name with each of refs (the URL paths of
// embedded files, in quotes in it) named by its version.
func (h *assetsHandler) versioned(name string, refs ...string) ([]byte, error) {
	b, err := fs.ReadFile(h.files, name)
	if err != nil {
		return nil, err
	}
	s := string(b)
	for _, ref := range refs {
		tag, ok := h.etags[ref]
		if !ok || !strings.Contains(s, `"`+ref+`"`) {
			return nil, fmt.Errorf("%s: no %s to name by version", name, ref)
		}
		s = strings.ReplaceAll(s, `"`+ref+`"`, `"`+ref+"?v="+strings.Trim(tag, `"`)+`"`)
	}
	return []byte(s), nil
}

func (h *assetsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if tag, ok := h.etags[path.Clean(r.URL.Path)]; ok {
		w.Header().Set("ETag", tag)
		if w.Header().Get("Cache-Control") == "" {
			if v := r.URL.Query().Get("v"); v != "" && `"`+v+`"` == tag {
				w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
			} else {
				w.Header().Set("Cache-Control", "no-cache")
			}
		}
	}
	h.serve.ServeHTTP(w, r)
}

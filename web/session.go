package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labctl/labctl"
	"github.com/labctl/labctl/api"
)

// CookieName is the session cookie. Its value is a random key the daemon
// keeps only as a digest.
const CookieName = "labctl_session"

// CSRFHeader carries a session's CSRF token on every request that
// changes something. The pages read it from /ui/session; another site
// can neither read it nor send the header without the daemon's consent
// (it gives none: no CORS).
const CSRFHeader = "X-Labctl-Csrf"

// session is one browser's login.
type session struct {
	name    string // the token's name
	role    labctl.Role
	csrf    string
	created time.Time
	expires time.Time
}

// sessions holds the live sessions, at most max: a login beyond that ends
// the oldest session of the same token, or if it has none, of the token
// with the most. One token's logins never end another token's sessions
// while it holds any itself: a viewer logging in over and over cannot log
// the admins out.
type sessions struct {
	mu     sync.Mutex
	ttl    time.Duration
	max    int
	now    func() time.Time
	byKey  map[[sha256.Size]byte]*session
	tokens []tokenHash
}

type tokenHash struct {
	name string
	role labctl.Role
	sum  [sha256.Size]byte
}

func newSessions(tokens []api.Token, ttl time.Duration, max int, now func() time.Time) *sessions {
	s := &sessions{ttl: ttl, max: max, now: now, byKey: map[[sha256.Size]byte]*session{}}
	for _, t := range tokens {
		if t.Host {
			// The hosts' own credential opens no browser session.
			continue
		}
		s.tokens = append(s.tokens, tokenHash{name: t.Name, role: t.Role, sum: sha256.Sum256([]byte(t.Secret))})
	}
	return s
}

// login checks a token (in constant time against every configured one)
// and starts a session for it: the cookie's key and the session.
func (s *sessions) login(token string) (string, *session, bool) {
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	var match *tokenHash
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(sum[:], s.tokens[i].sum[:]) == 1 {
			match = &s.tokens[i]
		}
	}
	if match == nil || token == "" {
		return "", nil, false
	}
	key, csrf := randomKey(), randomKey()
	now := s.now()
	se := &session{name: match.name, role: match.role, csrf: csrf, created: now, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	for len(s.byKey) >= s.max {
		s.dropOldestLocked(match.name)
	}
	s.byKey[sha256.Sum256([]byte(key))] = se
	return key, se, true
}

// get returns the live session of a cookie key.
func (s *sessions) get(key string) (*session, bool) {
	if key == "" {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := sha256.Sum256([]byte(key))
	se, ok := s.byKey[k]
	if !ok {
		return nil, false
	}
	if !s.now().Before(se.expires) {
		delete(s.byKey, k)
		return nil, false
	}
	return se, true
}

// logout ends the session of a cookie key.
func (s *sessions) logout(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byKey, sha256.Sum256([]byte(key)))
}

// count is the number of live sessions.
func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	return len(s.byKey)
}

func (s *sessions) expireLocked(now time.Time) {
	for k, se := range s.byKey {
		if !now.Before(se.expires) {
			delete(s.byKey, k)
		}
	}
}

// dropOldestLocked ends the oldest session of the token named name, or if
// it has none, of the token with the most sessions.
func (s *sessions) dropOldestLocked(name string) {
	per := map[string]int{}
	for _, se := range s.byKey {
		per[se.name]++
	}
	if per[name] == 0 {
		for n, c := range per {
			if c > per[name] || (c == per[name] && n < name) {
				name = n
			}
		}
	}
	var oldest [sha256.Size]byte
	var t time.Time
	first := true
	for k, se := range s.byKey {
		if se.name == name && (first || se.created.Before(t)) {
			oldest, t, first = k, se.created, false
		}
	}
	delete(s.byKey, oldest)
}

func randomKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// safeMethod reports whether a method changes nothing (and so needs no
// CSRF token).
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sameOrigin checks a request's Origin header (or, without one, its
// Referer) against the origin the request was sent to. A request that
// names neither is let through here: browsers name the origin on every
// cross-origin request that changes something, so the CSRF token is
// what stands against those.
func sameOrigin(r *http.Request, tls bool) error {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	want := scheme + "://" + r.Host
	if o := r.Header.Get("Origin"); o != "" {
		if !strings.EqualFold(o, want) {
			return fmt.Errorf("%w: request from origin %q; this daemon is %s", labctl.ErrForbidden, o, want)
		}
		return nil
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		u, err := url.Parse(ref)
		if err != nil || !strings.EqualFold(u.Scheme+"://"+u.Host, want) {
			return fmt.Errorf("%w: request from page %q; this daemon is %s", labctl.ErrForbidden, ref, want)
		}
	}
	return nil
}

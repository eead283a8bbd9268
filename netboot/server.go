// Package netboot is labctl's boot server: TFTP (for the NBP) and HTTP (for
// kernels, initrds and job images) over one read-only boot root, with
// per-node pxelinux configs generated on request, per-job image URLs that
// count the bytes they serve, upload URLs for job artifacts, and the DHCP
// server snippets a real lab needs to point its nodes here.
//
// Every name a client asks for is confined to the root: absolute names and
// ".." are refused before the file system is touched, and files are opened
// through os.Root, so symbolic links may point anywhere inside the root but
// never out of it.
package netboot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/labctl/labctl/netboot/tftp"
)

// Config says what the boot server serves and where.
type Config struct {
	// Root is the boot root: pxelinux.0/lpxelinux.0, ldlinux.c32,
	// pxelinux.cfg/default, master kernels and initrds. Served read-only.
	Root string
	// TFTPAddr is the UDP address TFTP listens on ("10.0.2.2:69",
	// "127.0.0.1:0"). Empty disables TFTP.
	TFTPAddr string
	// HTTPAddr is the TCP address HTTP listens on. Empty disables HTTP
	// (and with it HTTP boot entries, images and uploads).
	HTTPAddr string
	// HTTPURL is the base URL nodes use to reach HTTPAddr
	// ("http://10.0.2.2:16901"). Empty means "http://" + the address HTTP
	// actually listens on, which suits tests and single-host labs.
	HTTPURL string

	// TFTP tunes the TFTP engine; zero fields take the lab defaults.
	TFTP TFTPSettings

	// HTTP bounds the HTTP side; zero fields take the defaults.
	HTTP HTTPSettings

	// ShutdownGrace bounds how long Serve waits, once its context ends, for
	// HTTP transfers in flight (default 2s); connections still open then
	// are closed. TFTP transfers are ended at once with an ERROR packet
	// ("boot server shutting down"), so their clients need not time out.
	ShutdownGrace time.Duration

	// MaxUploadBytes caps one uploaded artifact, as sent (default 1 GiB).
	MaxUploadBytes int64
	// MaxUploadTotalBytes caps what one upload URL (one job) stores, in
	// all (default 1 GiB).
	MaxUploadTotalBytes int64
	// MaxUploadFiles caps the files one upload URL stores (default 1000).
	MaxUploadFiles int
}

// HTTPSettings bound what HTTP clients can hold.
//
// There is no timeout for a whole transfer (images are gigabytes), but a
// transfer must keep moving: each write (and each 256 KiB handed to the
// kernel) must finish within StallTimeout, and an upload's body must keep
// arriving as fast. A client that stops reading is cut off then, its file
// handle and socket freed.
//
// The caps let a 1,000-node PXE storm through (a node fetches its kernel
// and initrd one after the other, with at most a few connections at once)
// and keep a flood of connections from taking every file handle of the
// process (the daemon's API and database need some too). A connection
// beyond a cap is answered 503 and closed, with a warning in the log (at
// most one line a second). The per-client cap does not apply to loopback
// clients: a single-host lab, and simlab, whose QEMU user-mode network
// reaches the server from 127.0.0.1 for every node, look like one client.
// Nodes behind a NAT share an address too: raise the per-client cap for
// them, or turn it off.
type HTTPSettings struct {
	StallTimeout      time.Duration // default 60s
	MaxConns          int           // connections at once, in all; default 4096
	MaxConnsPerClient int           // from one address; default 64; negative: no per-client cap
}

// TFTPSettings are the TFTP engine's knobs.
//
// The defaults are chosen for a lab of hundreds of nodes PXE-booting at once
// on one Ethernet segment (issue 6 measures them with 400 and 1000 clients):
//
//   - MaxBlockSize 1468: the largest block that fits a 1500-byte Ethernet
//     frame (1500 − 20 IP − 8 UDP − 4 TFTP), so a block is never split into
//     IP fragments, where one lost fragment loses the block and old PXE ROMs
//     reassemble badly. Clients asking for less get what they ask for.
//     Raise the cap on jumbo-frame networks.
//   - MaxWindowSize 32: RFC 7440 windowsize is granted up to 32 blocks
//     (47 KB at 1468, well inside any receive buffer). The client asks for
//     a window; 8 to 16 already fill a gigabit link at LAN round-trip
//     times, so a larger grant only makes a loss costlier.
//   - Timeout 1s: the wait for an ACK before sending the window again. A
//     lab LAN answers in well under a millisecond, so 1s (tftpd-hpa's
//     default) recovers a lost packet quickly yet leaves a slow ROM in a
//     400-node storm time to answer; pin/tftp's 5s turns every loss into a
//     5s stall.
//   - Retries 5: each further wait for the same ACK doubles (1, 2, 4, 8,
//     16, 32 s), so a client silent for a minute has been power-cycled or
//     has given up and its transfer is freed (sooner when its closed port
//     answers with an ICMP error). A client that only paused (firmware
//     busy, a loaded VM host) still gets its block: GRUB's TFTP does not
//     send a lost ACK again by itself, so the server's resend is its only
//     way on. tftpd-hpa backs off the same way.
//   - MaxTransfers 2048: transfers running at once (one socket each, no
//     goroutine, a few hundred bytes of state; file contents are shared).
//     Requests beyond it are not refused, as atftpd's --maxthread and
//     dnsmasq's --tftp-max refuse them: they wait for a free slot, and a
//     client that asks again meanwhile keeps its place.
type TFTPSettings struct {
	MaxBlockSize  int           // default 1468
	MaxWindowSize int           // default 32; 1 turns RFC 7440 off
	Timeout       time.Duration // default 1s
	Retries       int           // default 5
	MaxTransfers  int           // default 2048
}

// Default values; see TFTPSettings.
const (
	DefaultTFTPBlockSize    = 1468
	DefaultTFTPWindowSize   = 32
	DefaultTFTPTimeout      = time.Second
	DefaultTFTPRetries      = 5
	DefaultTFTPMaxTransfers = 2048
	DefaultShutdownGrace    = 2 * time.Second
	DefaultMaxUploadBytes   = 1 << 30

	DefaultHTTPStallTimeout      = 60 * time.Second
	DefaultHTTPMaxConns          = 4096
	DefaultHTTPMaxConnsPerClient = 64
	DefaultMaxUploadTotalBytes   = 1 << 30
	DefaultMaxUploadFiles        = 1000
)

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.TFTP.MaxBlockSize == 0 {
		c.TFTP.MaxBlockSize = DefaultTFTPBlockSize
	}
	if c.TFTP.MaxWindowSize == 0 {
		c.TFTP.MaxWindowSize = DefaultTFTPWindowSize
	}
	if c.TFTP.MaxTransfers == 0 {
		c.TFTP.MaxTransfers = DefaultTFTPMaxTransfers
	}
	if c.TFTP.Timeout == 0 {
		c.TFTP.Timeout = DefaultTFTPTimeout
	}
	if c.TFTP.Retries == 0 {
		c.TFTP.Retries = DefaultTFTPRetries
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if c.MaxUploadTotalBytes == 0 {
		c.MaxUploadTotalBytes = DefaultMaxUploadTotalBytes
	}
	if c.MaxUploadFiles == 0 {
		c.MaxUploadFiles = DefaultMaxUploadFiles
	}
	if c.HTTP.StallTimeout == 0 {
		c.HTTP.StallTimeout = DefaultHTTPStallTimeout
	}
	if c.HTTP.MaxConns == 0 {
		c.HTTP.MaxConns = DefaultHTTPMaxConns
	}
	if c.HTTP.MaxConnsPerClient == 0 {
		c.HTTP.MaxConnsPerClient = DefaultHTTPMaxConnsPerClient
	}
	return c
}

// validate checks what can be checked without touching the network.
func (c Config) validate() error {
	if c.Root == "" {
		return errors.New("root: required")
	}
	if c.TFTPAddr == "" && c.HTTPAddr == "" {
		return errors.New("neither tftp nor http listen address set")
	}
	if c.TFTP.MaxBlockSize < 512 || c.TFTP.MaxBlockSize > 65464 {
		return fmt.Errorf("tftp block size %d: want 512..65464", c.TFTP.MaxBlockSize)
	}
	if c.TFTP.MaxWindowSize < 1 || c.TFTP.MaxWindowSize > 1024 {
		return fmt.Errorf("tftp window size %d: want 1..1024", c.TFTP.MaxWindowSize)
	}
	if c.TFTP.MaxTransfers < 1 {
		return fmt.Errorf("tftp max transfers %d: want at least 1", c.TFTP.MaxTransfers)
	}
	if c.TFTP.Timeout < 0 || c.TFTP.Retries < 0 || c.ShutdownGrace < 0 || c.MaxUploadBytes < 0 ||
		c.MaxUploadTotalBytes < 0 || c.MaxUploadFiles < 0 {
		return errors.New("negative tftp timeout, retries, shutdown grace or upload cap")
	}
	if c.HTTP.StallTimeout < 0 || c.HTTP.MaxConns < 0 {
		return errors.New("negative http stall timeout or connection cap")
	}
	if c.HTTPURL != "" && c.HTTPAddr == "" {
		return errors.New("http url set but no http listen address")
	}
	if c.HTTPURL != "" {
		u, err := url.Parse(c.HTTPURL)
		if err != nil {
			return fmt.Errorf("http url %q: %w", c.HTTPURL, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("http url %q: want http(s)://host[:port][/path]", c.HTTPURL)
		}
	}
	return nil
}

// Server is the boot server. Create it with New, run it with Serve. Its
// methods are safe for concurrent use, also while transfers run.
type Server struct {
	cfg     Config
	log     *slog.Logger
	root    *os.Root
	httpURL string // base URL without trailing slash; "" without HTTP

	udp       net.PacketConn // nil without TFTP
	tcp       net.Listener   // nil without HTTP
	nodes     *nodeTable
	tftp      *tftp.Server // nil without TFTP
	httpSrv   *http.Server
	conns     *connLimiter // the HTTP listener; nil without HTTP
	refused   refusalLog
	httpStats httpCounters

	mu      sync.Mutex
	images  map[string]*Image  // by token
	uploads map[string]*Upload // by token
	saves   map[string]*Save   // by token
	served  bool
	closed  bool
}

// New opens the boot root and binds the listeners, so that a busy port or a
// missing root is reported before any job starts and the real addresses
// (with port 0) are known to the caller. Call Serve to answer requests, or
// Close to release what New took.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("boot server config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("boot server: open root: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		root:    root,
		images:  map[string]*Image{},
		uploads: map[string]*Upload{},
		saves:   map[string]*Save{},
	}
	if cfg.TFTPAddr != "" {
		s.udp, err = net.ListenPacket("udp", cfg.TFTPAddr)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("boot server: tftp listen %s: %w", cfg.TFTPAddr, err)
		}
	}
	if cfg.HTTPAddr != "" {
		s.tcp, err = net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("boot server: http listen %s: %w", cfg.HTTPAddr, err)
		}
		s.httpURL = strings.TrimSuffix(cfg.HTTPURL, "/")
		if s.httpURL == "" {
			s.httpURL = "http://" + s.tcp.Addr().String()
		}
		h := cfg.HTTP
		// Half the process's file handles at most, so that a flood of
		// connections leaves the rest of the process (TFTP, the API, the
		// database, consoles) some.
		if lim := openFileLimit(); lim > 0 && uint64(h.MaxConns) > lim/2 {
			log.Warn("http: connection cap lowered to half the open-file limit", "max_conns", h.MaxConns, "open_file_limit", lim, "now", lim/2)
			h.MaxConns = int(lim / 2)
		}
		s.conns = newConnLimiter(s.tcp, h)
		// No WriteTimeout or ReadTimeout: they bound whole requests, and
		// an image takes minutes. Connections bound each write instead
		// (HTTPSettings); uploads each read of the body.
		s.httpSrv = &http.Server{
			Handler:           s,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       time.Minute,
			ConnContext:       connContext,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	}
	s.nodes = newNodeTable(s.httpURL)
	if s.udp != nil {
		s.tftp, err = tftp.NewServer(s.tftpRead, tftp.Config{
			MaxBlockSize:  cfg.TFTP.MaxBlockSize,
			MaxWindowSize: cfg.TFTP.MaxWindowSize,
			Timeout:       cfg.TFTP.Timeout,
			Retries:       cfg.TFTP.Retries,
			MaxTransfers:  cfg.TFTP.MaxTransfers,
		}, log)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("boot server config: %w", err)
		}
	}
	return s, nil
}

// TFTPAddr is the address TFTP listens on (nil without TFTP).
func (s *Server) TFTPAddr() net.Addr {
	if s.udp == nil {
		return nil
	}
	return s.udp.LocalAddr()
}

// HTTPAddr is the address HTTP listens on (nil without HTTP).
func (s *Server) HTTPAddr() net.Addr {
	if s.tcp == nil {
		return nil
	}
	return s.tcp.Addr()
}

// HTTPURL is the base URL nodes use to reach the HTTP server, without a
// trailing slash ("" without HTTP).
func (s *Server) HTTPURL() string { return s.httpURL }

// Serve answers TFTP and HTTP requests until ctx ends, then stops: new
// requests are refused at once, transfers in flight get
// Config.ShutdownGrace to finish, and Serve returns nil. It returns an error
// if a listener fails for another reason. Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.served || s.closed {
		s.mu.Unlock()
		return errors.New("boot server: Serve called twice or after Close")
	}
	s.served = true
	s.mu.Unlock()
	defer s.Close()

	attrs := []any{"root", s.cfg.Root, "tftp", addrString(s.TFTPAddr()), "http", addrString(s.HTTPAddr()), "http_url", s.httpURL}
	if s.conns != nil {
		attrs = append(attrs, "http_max_conns", s.conns.max, "http_max_conns_per_client", s.conns.perClient, "http_stall_timeout", s.conns.stall)
	}
	s.log.Info("boot server up", attrs...)
	g, gctx := errgroup.WithContext(ctx)
	if s.tftp != nil {
		g.Go(func() error { return s.tftp.Serve(gctx, s.udp) })
	}
	if s.httpSrv != nil {
		g.Go(func() error { return s.serveHTTP(gctx) })
	}
	err := g.Wait()
	s.log.Info("boot server down")
	return err
}

// serveHTTP runs the HTTP server until ctx ends.
func (s *Server) serveHTTP(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.httpSrv.Serve(s.conns) }()
	select {
	case err := <-errc:
		return fmt.Errorf("boot server: http %s: %w", s.tcp.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	if err := s.httpSrv.Shutdown(sctx); err != nil {
		s.log.Warn("http: connections still open after grace, closing them", "grace", s.cfg.ShutdownGrace)
		s.httpSrv.Close()
	}
	<-errc // http.ErrServerClosed
	return nil
}

// Close releases the listeners and the root, and unpublishes every image
// and upload. Serve calls it on return; call it yourself only when Serve
// never ran. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	// Images and uploads hold nothing open between requests.
	s.images, s.uploads, s.saves = map[string]*Image{}, map[string]*Upload{}, map[string]*Save{}
	s.mu.Unlock()
	if s.udp != nil {
		s.udp.Close()
	}
	if s.tcp != nil {
		s.tcp.Close()
	}
	return s.root.Close()
}

// SetNode sets what the node with this MAC (and, optionally, IPv4 address)
// boots from now on. A local entry becomes the node's local entry, used
// whenever it has no job entry, and ends any job entry. A master or kernel
// entry becomes its job entry until ClearNode or the next local entry.
func (s *Server) SetNode(mac net.HardwareAddr, ip net.IP, entry Entry) error {
	if err := s.nodes.set(mac, ip, entry); err != nil {
		return fmt.Errorf("boot server: %w", err)
	}
	s.log.Debug("pxe config set", "mac", mac.String(), "ip", ip, "entry", entry.Kind.String())
	return nil
}

// ClearNode drops the node's job entry: it boots its local entry again.
func (s *Server) ClearNode(mac net.HardwareAddr) {
	s.nodes.clear(mac)
	s.log.Debug("pxe config cleared", "mac", mac.String())
}

// RemoveNode forgets the node: its config names are served from the root,
// if files with those names exist there.
func (s *Server) RemoveNode(mac net.HardwareAddr) {
	s.nodes.remove(mac)
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

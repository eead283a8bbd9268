// Package tftp is a read-only TFTP server (RFC 1350 with the option
// extensions RFC 2347, blksize RFC 2348, tsize RFC 2349 and windowsize
// RFC 7440) built for boot storms: hundreds of nodes asking for the same
// few files at once.
//
// The server knows packets, options, retransmission and how to move bytes
// fast; what a name means is the business of a ReadHandler, which turns
// each read request into a Content:
//
//	srv, err := tftp.NewServer(func(name string, client netip.AddrPort) (tftp.Content, error) {
//		f, err := root.Open(name)
//		...
//		return tftp.Content{File: f, Info: fi}, nil
//	}, tftp.Config{...}, log)
//	err = srv.Serve(ctx, conn)
//
// On Linux a few event loops run every transfer, each loop on sockets of
// its own shared by its transfers, moving many transfers' packets per
// system call (loop_linux.go); small files are read once into memory and
// shared by every transfer (fileCache). Elsewhere each transfer
// runs in a goroutine of its own on a net.UDPConn: correct, not fast.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A ReadHandler answers a read request: the content for filename, asked by
// client. An error refuses the request (see ErrNotFound and ErrBadName).
// The handler runs on the goroutine that reads requests, so it should not
// block for long.
type ReadHandler func(filename string, client netip.AddrPort) (Content, error)

// Content is what a read request is answered with: Data, or else File.
type Content struct {
	// Data is the whole content, when it is in memory (a generated file).
	Data []byte
	// File is read when Data is nil; the server closes it. Files up to
	// the cache limits are read once and kept in memory, keyed on Info.
	File *os.File
	// Info is File's FileInfo from the open, so the server need not ask
	// the file system again; nil makes the server call File.Stat.
	Info os.FileInfo
	// Log holds attributes added to the transfer's log line (which node a
	// generated file is for, say).
	Log []slog.Attr
}

// Errors a ReadHandler returns, or wraps, to refuse a request.
var (
	// ErrNotFound: nothing behind the name. Misses are routine (a PXE
	// loader walks its config names until one exists): logged at debug
	// level. A handler error that wraps neither sentinel counts as one.
	ErrNotFound = errors.New("file not found")
	// ErrBadName: a name that can never be served (it tries to leave the
	// root, say). The client is told so and the refusal logged as a
	// warning.
	ErrBadName = errors.New("invalid file name")
)

// Config holds the server's limits; NewServer checks their ranges.
type Config struct {
	MaxBlockSize  int           // largest blksize granted: 512..65464
	MaxWindowSize int           // largest windowsize granted: 1..1024 (1 turns RFC 7440 off)
	Timeout       time.Duration // first wait for an ACK before sending again (each further wait doubles): > 0
	Retries       int           // timeouts in a row before a transfer is given up: >= 0
	MaxTransfers  int           // transfers running at once; more requests wait: >= 1
}

func (c Config) validate() error {
	switch {
	case c.MaxBlockSize < 512 || c.MaxBlockSize > maxBlockSize:
		return fmt.Errorf("tftp block size %d: want 512..%d", c.MaxBlockSize, maxBlockSize)
	case c.MaxWindowSize < 1 || c.MaxWindowSize > 1024:
		return fmt.Errorf("tftp window size %d: want 1..1024", c.MaxWindowSize)
	case c.MaxTransfers < 1:
		return fmt.Errorf("tftp max transfers %d: want at least 1", c.MaxTransfers)
	case c.Timeout <= 0 || c.Timeout > time.Minute || c.Retries < 0:
		return fmt.Errorf("tftp timeout %v, retries %d: want a timeout of up to 1m, retries >= 0", c.Timeout, c.Retries)
	}
	return nil
}

// Server is a TFTP server. Create it with NewServer, run it with Serve.
type Server struct {
	read      ReadHandler
	log       *slog.Logger
	maxBlock  int
	maxWindow int
	timeout   time.Duration
	retries   int
	cache     *fileCache

	// slots holds one token per running transfer (MaxTransfers); requests
	// beyond it wait for a slot, up to maxWaiting of them.
	slots      chan struct{}
	waiting    atomic.Int64
	maxWaiting int64

	stop    chan struct{} // closed when Serve's context ends
	starts  sync.WaitGroup
	mu      sync.Mutex
	clients map[netip.AddrPort]*clientState // a transfer is starting, waiting or running for this client

	active      atomic.Int64 // transfers holding a slot
	retransmits atomic.Int64
	done        atomic.Int64 // transfers that ended (see Stats)
	failed      atomic.Int64
	refused     atomic.Int64
	sentBytes   atomic.Int64

	loop loopState // how transfers run on this platform
}

// backoffSteps bounds the doubling of the wait for an ACK: the k-th
// timeout in a row is followed by a wait of Timeout<<min(k, backoffSteps).
// A client that stops answering for a while (firmware busy, a loaded
// host's VM not scheduled, a lost ACK that a loader such as GRUB does not
// send again on its own) gets the block again, more rarely, for about a
// minute with the defaults (1+2+4+8+16+32 s), as tftpd-hpa's backoff does;
// a client that is gone for good is usually told apart sooner by the ICMP
// error its closed port sends.
const backoffSteps = 5

// ackWait is how long a transfer waits for an ACK after its timeouts-th
// timeout in a row.
func ackWait(timeout time.Duration, timeouts int) time.Duration {
	return timeout << min(timeouts, backoffSteps)
}

// patience is how long a transfer waits for an ACK before giving up.
func patience(timeout time.Duration, retries int) time.Duration {
	var d time.Duration
	for k := 0; k <= retries; k++ {
		d += ackWait(timeout, k)
	}
	return d
}

// Cache limits: files up to 64 MiB (NBPs, kernels, initrds) are kept in
// memory, 256 MiB in all; bigger files are read block by block.
const (
	cacheMaxFile  = 64 << 20
	cacheMaxTotal = 256 << 20
)

// NewServer returns a server that answers read requests with read. Write
// requests are refused. log may be nil.
func NewServer(read ReadHandler, cfg Config, log *slog.Logger) (*Server, error) {
	if read == nil {
		return nil, errors.New("tftp: no read handler")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		read:       read,
		log:        log,
		maxBlock:   cfg.MaxBlockSize,
		maxWindow:  cfg.MaxWindowSize,
		timeout:    cfg.Timeout,
		retries:    cfg.Retries,
		cache:      newFileCache(cacheMaxFile, cacheMaxTotal),
		slots:      make(chan struct{}, cfg.MaxTransfers),
		maxWaiting: 4 * int64(cfg.MaxTransfers),
		stop:       make(chan struct{}),
		clients:    map[netip.AddrPort]*clientState{},
	}
	s.loop.init()
	return s, nil
}

// Active is the number of transfers running now.
func (s *Server) Active() int64 { return s.active.Load() }

// Stats are a server's counters since it was made, for metrics.
type Stats struct {
	Active      int64 // transfers running now
	Done        int64 // transfers that ended with the last block acknowledged
	Failed      int64 // transfers that started and ended otherwise
	Refused     int64 // requests answered with an error (no such file, write, mode)
	Bytes       int64 // bytes acknowledged by clients
	Retransmits int64 // blocks sent again
}

// Stats returns the server's counters; reading them costs a few atomic
// loads, so a metrics scrape may call it at any time.
func (s *Server) Stats() Stats {
	return Stats{Active: s.active.Load(), Done: s.done.Load(), Failed: s.failed.Load(), Refused: s.refused.Load(),
		Bytes: s.sentBytes.Load(), Retransmits: s.retransmits.Load()}
}

// Serve answers requests on conn, a UDP socket, until ctx ends. Then it
// stops taking requests, ends every transfer in flight with an ERROR
// packet ("boot server shutting down", so no client waits for its
// timeout) and returns nil. It returns an error if it cannot start, or
// where requests are read through conn (the portable build) if conn fails.
// Serve may be called once; it does not close conn.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	udp, ok := conn.(*net.UDPConn)
	if !ok {
		return fmt.Errorf("boot server: tftp: %T is not a UDP socket", conn)
	}
	return s.serve(ctx, udp)
}

// accept reads one datagram p that came to the listening socket from
// client: a request to start (ok), or one answered with an error, a
// retransmitted request of a transfer under way, or not a request at all.
// dst is the address replies leave from (local, or with needDst the
// request's own destination from oob). For a request to start it counts
// the start (s.starts) and takes a transfer slot if one is free at once
// (haveSlot); without one, the caller starts it on a goroutine that waits.
func (s *Server) accept(p []byte, client netip.AddrPort, local netip.Addr, needDst bool, oob []byte) (req request, dst netip.Addr, haveSlot, ok bool) {
	req, err := parseRequest(p)
	dst = local
	if needDst && (err == nil || errors.As(err, new(*requestError))) {
		dst = pktinfoDst(oob)
	}
	if rerr := (*requestError)(nil); errors.As(err, &rerr) {
		s.log.Warn("tftp: request refused", "client", client.Addr().String(), "err", rerr.msg)
		s.refuse(client, dst, rerr.code, rerr.msg)
		return req, dst, false, false
	}
	if err != nil {
		s.log.Debug("tftp: not a request", "client", client.Addr().String(), "err", err)
		return req, dst, false, false
	}
	s.mu.Lock()
	c, busy := s.clients[client]
	if !busy {
		s.clients[client] = &clientState{}
	}
	s.mu.Unlock()
	if busy {
		if c.startedOver(oob) && c.queued.CompareAndSwap(false, true) {
			s.loop.askedAgain(c) // its loop ends the old transfer
		}
		// Dropped: a retransmitted request's transfer is under way; a
		// client that started over asks again once its old transfer
		// has ended.
		return req, dst, false, false
	}
	s.starts.Add(1)
	select {
	case s.slots <- struct{}{}:
		return req, dst, true, true
	default:
		return req, dst, false, true
	}
}

// open runs a request up to the point where it needs a socket: wait for a
// transfer slot, ask the handler for the content, negotiate options. It
// returns nil when the request was refused or dropped; the client has
// then been told and everything released. log is the transfer's logger.
func (s *Server) open(req request, client netip.AddrPort, dst netip.Addr, haveSlot bool) (t *transfer, log *slog.Logger) {
	release := func() {
		s.mu.Lock()
		delete(s.clients, client)
		s.mu.Unlock()
	}
	log = s.log.With("proto", "tftp", "client", client.Addr().String(), "file", logName(req.filename))
	// A refused request's client may ask again as soon as it reads the
	// error, and another loop may read that request: the client's place
	// is given back before the error leaves.
	refuse := func(code uint16, msg string) {
		s.refused.Add(1)
		if haveSlot {
			<-s.slots
		}
		release()
		s.refuse(client, dst, code, msg)
	}
	if req.op == opWRQ {
		log.Warn("tftp write refused")
		refuse(errCodeAccess, errReadOnly.Error())
		return nil, nil
	}
	// Only octet is served. netascii would mean converting line ends
	// (LF to CR LF, CR to CR NUL): the size (tsize) is then unknown until
	// the whole file has been read, and a block no longer maps to one
	// offset of the file, which the shared cache and the block reads of
	// large files depend on. Every boot loader asks for octet; a client
	// that asks for netascii is told, not handed bytes it did not ask for.
	switch req.mode {
	case "octet":
	case "netascii":
		log.Warn("tftp: transfer mode refused", "mode", req.mode)
		refuse(errCodeIllegalOp, "netascii mode not supported: octet only")
		return nil, nil
	default:
		log.Warn("tftp: transfer mode refused", "mode", logName(req.mode))
		refuse(errCodeIllegalOp, fmt.Sprintf("unknown transfer mode %q: octet only", clip(req.mode, 32)))
		return nil, nil
	}

	// Beyond MaxTransfers, requests wait for a slot instead of being
	// refused: the client sees a slow start, not a failed boot.
	if !haveSlot && !s.acquireSlot() {
		log.Warn("tftp: too many requests waiting for a transfer slot; dropped (the client will ask again)")
		release()
		return nil, nil
	}
	s.active.Add(1)
	s.mu.Lock()
	cs := s.clients[client]
	s.mu.Unlock()
	t = &transfer{key: client, client: cs, name: req.filename, start: time.Now()}
	fail := func(code uint16, msg string) {
		s.refused.Add(1)
		s.finishQuiet(t)
		s.refuse(client, dst, code, msg)
	}

	c, err := s.read(req.filename, client)
	if err != nil {
		if errors.Is(err, ErrBadName) {
			log.Warn("transfer refused", "err", err)
			fail(errCodeNotFound, ErrBadName.Error())
		} else {
			log.Debug("transfer refused", "err", err)
			fail(errCodeNotFound, ErrNotFound.Error())
		}
		return nil, nil
	}
	t.log = c.Log
	if c.File == nil {
		t.data, t.size = c.Data, int64(len(c.Data))
	} else {
		fi := c.Info
		if fi == nil {
			if fi, err = c.File.Stat(); err != nil {
				c.File.Close()
				log.Warn("transfer failed", "err", err)
				fail(errCodeUndefined, "read error")
				return nil, nil
			}
		}
		t.size = fi.Size()
		// The handler's fstat is recent enough: the cache keys on inode,
		// size and mtime, and a file changed after this point is a race
		// a second fstat could not close either.
		var cached bool
		t.data, cached, err = s.cache.get(c.File, fi)
		if err != nil {
			c.File.Close()
			log.Warn("transfer failed", "err", err)
			fail(errCodeUndefined, "read error")
			return nil, nil
		}
		if cached {
			c.File.Close()
		} else {
			t.file = c.File
		}
	}

	t.blk, t.window = 512, 1
	var opts []string
	if req.blksize > 0 {
		t.blk = min(req.blksize, s.maxBlock)
		opts = append(opts, "blksize", strconv.Itoa(t.blk))
	}
	if req.tsize {
		opts = append(opts, "tsize", strconv.FormatInt(t.size, 10))
	}
	if req.windowsize > 0 {
		t.window = min(req.windowsize, s.maxWindow)
		opts = append(opts, "windowsize", strconv.Itoa(t.window))
	}
	if len(opts) > 0 {
		t.oack = appendOACK(nil, opts...)
	}
	t.nblocks = uint64(t.size/int64(t.blk)) + 1
	t.base = 1
	return t, log
}

// acquireSlot waits for a transfer slot. It returns false if too many
// requests wait already, or the server stops.
func (s *Server) acquireSlot() bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	if s.waiting.Add(1) > s.maxWaiting {
		s.waiting.Add(-1)
		return false
	}
	defer s.waiting.Add(-1)
	select {
	case s.slots <- struct{}{}:
		return true
	case <-s.stop:
		return false
	}
}

// finish releases everything a transfer holds and logs it (err nil: done).
func (s *Server) finish(t *transfer, err error) {
	logTransfer(s.log, t, err)
	s.sentBytes.Add(t.acked())
	switch {
	case err == nil:
		s.done.Add(1)
	case sizeQuery(t, err):
		// Not a failure: the client asked for the size only.
	default:
		s.failed.Add(1)
	}
	s.finishQuiet(t)
}

// clientError is an ERROR packet a client sent, which ends its transfer.
type clientError struct {
	code uint16
	msg  string
}

func (e clientError) Error() string { return fmt.Sprintf("client sent error %d: %q", e.code, e.msg) }

// sizeQuery reports whether a transfer ended as a size query: the client
// read the OACK's tsize and ended it with error 8 before taking any data,
// as UEFI PXE firmware does before it fetches the file (RFC 2349).
func sizeQuery(t *transfer, err error) bool {
	var ce clientError
	return t.oack != nil && t.acked() == 0 && errors.As(err, &ce) && ce.code == errCodeOptionRefused
}

// release gives back what a transfer holds besides its socket: the file,
// the client's place and the slot.
func (s *Server) release(t *transfer) {
	if t.file != nil {
		t.file.Close()
		t.file = nil
	}
	s.mu.Lock()
	delete(s.clients, t.key)
	s.mu.Unlock()
	s.active.Add(-1)
	<-s.slots
}

// clientState is a client (address and port) whose transfer is starting,
// waiting for a slot or running.
type clientState struct {
	// answered is when (Unix ns, wall clock) the client first
	// acknowledged a packet of its transfer; 0 until it has. A request
	// from the client that reached the host before then is its own
	// retransmission, however late the server reads it (startedOver).
	answered   atomic.Int64
	queued     atomic.Bool // its loop has been asked to end the transfer and has not looked yet
	loopClient             // how the platform's loop finds the transfer
}

// startedOver reports whether a request from c, with the control
// messages oob it was read with, means that c started over: it was sent
// after c had answered its transfer. A client sends its request again only while it waits for
// the first answer, so a request sent after an answer comes from a
// client that was reset and asks from the same port: a loader numbers
// its ports from the same base after each reset (GRUB does), while the
// server may still be resending the old transfer's block. A duplicate
// that waited in the listening socket's queue reached the host before
// the client's first answer, and changes nothing. A request whose
// arrival time is unknown (arrivalTime) changes nothing.
func (c *clientState) startedOver(oob []byte) bool {
	at := c.answered.Load()
	if at == 0 {
		return false
	}
	arrived := arrivalTime(oob)
	return !arrived.IsZero() && arrived.UnixNano() > at
}

// answer records that the client has acknowledged a packet.
func (c *clientState) answer() {
	if c.answered.Load() == 0 {
		c.answered.Store(time.Now().UnixNano())
	}
}

// transfer is one read transfer. Once running it belongs to exactly one
// goroutine (an event loop's, on Linux); only that goroutine touches it.
type transfer struct {
	loopTransfer // what the platform's loop keeps per transfer
	key          netip.AddrPort
	client       *clientState // s.clients[key]
	name         string
	log          []slog.Attr // the handler's attributes for the log line
	start        time.Time
	data         []byte   // the whole content, when in memory
	file         *os.File // else read block by block; closed at the end
	size         int64
	blk          int    // negotiated block size
	window       int    // negotiated window size (1 = lock-step)
	oack         []byte // OACK packet while waiting for ACK 0, else nil

	nblocks   uint64 // DATA blocks in the transfer (the last one is short, maybe empty)
	base      uint64 // first block not yet acknowledged (1-based)
	sent      uint64 // highest block sent so far
	retries   int    // timeouts in a row
	dupResent bool   // a duplicate ACK already made us resend this window
}

// acked is how many bytes the client has acknowledged.
func (t *transfer) acked() int64 {
	if t.base <= 1 {
		return 0
	}
	return min(int64(t.base-1)*int64(t.blk), t.size)
}

// readBlock fills p with the content at off.
func (t *transfer) readBlock(p []byte, off int64) error {
	if t.data != nil {
		copy(p, t.data[off:])
		return nil
	}
	if len(p) == 0 {
		return nil
	}
	if n, err := t.file.ReadAt(p, off); n < len(p) {
		return fmt.Errorf("read %s at %d: %w", t.name, off, err)
	}
	return nil
}

// maxDatagram is the largest UDP payload (65,535 less the UDP header, and
// more than IPv4 allows).
const maxDatagram = 65535 - 8

// maxLogName bounds a client's file name (or mode) in a log line: names a
// boot server serves are far shorter, longer ones are refused, and a
// request may carry almost 64 KiB of name.
const maxLogName = 256

// logName is name for a log line: cut to maxLogName bytes, saying so.
func logName(name string) string {
	if len(name) <= maxLogName {
		return name
	}
	return clip(name, maxLogName) + "... (" + strconv.Itoa(len(name)) + " bytes)"
}

// clip cuts s to at most n bytes.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// logTransfer writes the one line per transfer.
func logTransfer(log *slog.Logger, t *transfer, err error) {
	attrs := []slog.Attr{slog.String("proto", "tftp"), slog.String("client", t.key.Addr().Unmap().String()), slog.String("file", logName(t.name))}
	attrs = append(attrs, t.log...)
	attrs = append(attrs, slog.Int64("bytes", t.acked()), slog.Duration("duration", time.Since(t.start).Round(time.Millisecond)))
	if err == nil {
		log.LogAttrs(context.Background(), slog.LevelInfo, "transfer done", attrs...)
		return
	}
	attrs = append(attrs, slog.Int64("size", t.size))
	if sizeQuery(t, err) {
		log.LogAttrs(context.Background(), slog.LevelInfo, "size query answered", attrs...)
		return
	}
	attrs = append(attrs, slog.String("err", err.Error()))
	log.LogAttrs(context.Background(), slog.LevelWarn, "transfer failed", attrs...)
}

// errReadOnly is what a write request gets.
var errReadOnly = fmt.Errorf("write requests refused: read-only boot server: %w", os.ErrPermission)

// errShuttingDown ends transfers when the server stops.
var errShuttingDown = errors.New("boot server shutting down")

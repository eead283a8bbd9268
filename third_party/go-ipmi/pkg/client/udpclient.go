package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/proxy"
)

var udpRecvBufferSize = 4096
var udpReadTimeoutSeconds = 10

// errNoDatagramMatched is returned by ExchangeUntilMatch when the overall read deadline
// elapses without any inbound datagram for which the match callback returns true.
var errNoDatagramMatched = errors.New("udp exchange: no datagram matched before deadline")

// UDPClient exposes some common methods for communicating with UDP target addr.
type UDPClient struct {
	// Target Host
	Host string
	// Target Port
	Port int

	proxy      proxy.Dialer
	timeout    time.Duration
	bufferSize int

	conn   net.Conn
	closed bool
	// recvBuf is the exchanges' receive buffer (labctl's patch: upstream
	// allocated bufferSize bytes per exchange); lock guards it.
	recvBuf []byte

	// lock is used to protect udp Exchange method to prevent another
	// send/receive operation from occurring while one is in progress.
	lock sync.Mutex
}

func NewUDPClient(host string, port int) *UDPClient {
	udpClient := &UDPClient{
		Host:       host,
		Port:       port,
		bufferSize: udpRecvBufferSize,
		timeout:    time.Duration(udpReadTimeoutSeconds) * time.Second,
	}
	return udpClient
}

func (c *UDPClient) initConn() error {
	c.lock.Lock()
	defer c.lock.Unlock()

	if c.conn != nil && !c.closed {
		return nil
	}

	if c.proxy != nil {
		conn, err := c.proxy.Dial("udp", fmt.Sprintf("%s:%d", c.Host, c.Port))
		if err != nil {
			return fmt.Errorf("udp proxy dial failed, err: %w", err)
		}
		c.conn = conn
		return nil
	}

	remoteAddr, err := net.ResolveUDPAddr("udp", fmt.Sprintf("%s:%d", c.Host, c.Port))
	if err != nil {
		return fmt.Errorf("resolve addr failed, err: %w", err)
	}
	conn, err := net.DialUDP("udp", nil, remoteAddr)
	if err != nil {
		return fmt.Errorf("udp dial failed, err: %w", err)
	}
	c.conn = conn
	return nil
}

func (c *UDPClient) SetProxy(proxy proxy.Dialer) *UDPClient {
	c.proxy = proxy
	return c
}

func (c *UDPClient) SetTimeout(timeout time.Duration) *UDPClient {
	c.timeout = timeout
	return c
}

func (c *UDPClient) SetBufferSize(bufferSize int) *UDPClient {
	c.bufferSize = bufferSize
	return c
}

// RemoteIP returns the parsed ip address of the target.
func (c *UDPClient) RemoteIP() string {
	if net.ParseIP(c.Host) == nil {
		addrs, err := net.LookupHost(c.Host)
		if err == nil && len(addrs) > 0 {
			return addrs[0]
		}
	}
	return c.Host
}

func (c *UDPClient) LocalIPPort() (string, int) {
	conn, err := net.Dial("udp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
	if err != nil {
		return "", 0
	}
	defer conn.Close()
	host, port, _ := net.SplitHostPort(conn.LocalAddr().String())
	p, _ := strconv.Atoi(port)
	return host, p
}

func (c *UDPClient) Close() error {
	c.lock.Lock()
	defer c.lock.Unlock()

	if c.conn == nil {
		return nil
	}

	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("close udp conn failed, err: %w", err)
	}

	c.conn = nil
	c.closed = true
	return nil
}

// Exchange performs a synchronous UDP query.
// It sends the request, and waits for a reply.
// Exchange does not retry a failed query.
// The sent content is read from reader.
func (c *UDPClient) Exchange(ctx context.Context, reader io.Reader) ([]byte, error) {
	return c.exchange(ctx, reader, nil)
}

// ExchangeUntilMatch sends the payload read from reader as a single UDP datagram, then reads
// repeatedly until match returns true for some received datagram, or until the overall deadline
// elapses (the same deadline rules as Exchange: min of context deadline and client timeout).
// Datagrams for which match returns (false, nil) are discarded and reading continues.
//
// Unlike Exchange, which returns the first datagram unconditionally, ExchangeUntilMatch filters
// inbound traffic: stray packets, unrelated replies, or multiplexed traffic on the same socket can
// be skipped by returning (false, nil) from match. If the deadline passes with no matching
// datagram, the returned error indicates that no datagram satisfied match before the deadline.
//
// If match returns a non-nil error, that error is returned immediately. When match returns
// (true, nil), the corresponding datagram's payload is returned.
func (c *UDPClient) ExchangeUntilMatch(ctx context.Context, reader io.Reader, match func(recv []byte) (ok bool, err error)) ([]byte, error) {
	return c.exchange(ctx, reader, match)
}

// aLongTimeAgo is a read deadline that cuts a blocked read short.
var aLongTimeAgo = time.Unix(1, 0)

// exchange runs Exchange (match nil) or ExchangeUntilMatch on the caller's
// goroutine (labctl's patch: upstream starts a goroutine per exchange so
// that a cancelled context returns at once; here cancelling ctx moves the
// read deadline into the past instead, which ends the read as promptly).
func (c *UDPClient) exchange(ctx context.Context, reader io.Reader, match func(recv []byte) (bool, error)) ([]byte, error) {
	if err := c.initConn(); err != nil {
		return nil, fmt.Errorf("init udp connection failed, err: %w", err)
	}
	canceled := func() error { return fmt.Errorf("canceled from caller: %w", ctx.Err()) }

	c.lock.Lock()
	defer c.lock.Unlock()
	if ctx.Err() != nil {
		return nil, canceled()
	}
	conn := c.conn
	if conn == nil {
		return nil, fmt.Errorf("udp exchange: %w", net.ErrClosed)
	}
	// The deadline must be cut before the lock is released: a cut that
	// came late would end the next exchange's read.
	cut := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = conn.SetReadDeadline(aLongTimeAgo)
		close(cut)
	})
	defer func() {
		if !stop() {
			<-cut
		}
	}()

	if _, err := io.Copy(conn, reader); err != nil {
		if ctx.Err() != nil {
			return nil, canceled()
		}
		return nil, fmt.Errorf("write to conn failed, err: %w", err)
	}

	// Use the earlier deadline between context and configured timeout.
	deadline := time.Now().Add(c.timeout)
	if ctxDeadline, ok := ctx.Deadline(); ok && ctxDeadline.Before(deadline) {
		deadline = ctxDeadline
	}
	if len(c.recvBuf) != c.bufferSize {
		c.recvBuf = make([]byte, c.bufferSize)
	}
	recvBuffer := c.recvBuf
	for {
		remaining := time.Until(deadline)
		if match != nil && remaining <= 0 {
			return nil, errNoDatagramMatched
		}
		readDur := remaining
		if c.timeout > 0 && c.timeout < remaining {
			readDur = c.timeout
		}
		if err := conn.SetReadDeadline(time.Now().Add(readDur)); err != nil {
			return nil, fmt.Errorf("set conn read deadline failed, err: %w", err)
		}
		// Checked after setting the deadline: a cancellation from here on
		// runs the cut after it.
		if ctx.Err() != nil {
			return nil, canceled()
		}

		nRead, err := conn.Read(recvBuffer)
		if ctx.Err() != nil {
			return nil, canceled()
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() && match != nil {
				continue
			}
			return nil, fmt.Errorf("read from conn failed, err: %w", err)
		}
		recv := append([]byte(nil), recvBuffer[:nRead]...)
		if match == nil {
			return recv, nil
		}

		ok, mErr := safeMatch(match, recv)
		if mErr != nil {
			return nil, mErr
		}
		if ok {
			return recv, nil
		}
	}
}

// Readable says whether a datagram is waiting to be read now, without
// reading it or waiting (labctl's patch): a stream woken by WaitReadable
// checks that the datagram is still there, since an exchange running
// meanwhile may have taken it. Where it cannot tell it says true.
func (c *UDPClient) Readable() bool {
	if !canPeek {
		return true
	}
	c.lock.Lock()
	defer c.lock.Unlock()
	_, rc, err := c.rawConnLocked()
	if err != nil {
		return true
	}
	ready := true
	if err := rc.Control(func(fd uintptr) { ready = peekReady(fd) }); err != nil {
		return true
	}
	return ready
}

// WaitReadable blocks until a datagram from the peer is waiting to be read,
// without reading it, or until the connection is closed (labctl's patch:
// an SOL stream sleeps on it instead of polling the BMC). It may return
// early, when an exchange's read deadline passes meanwhile; ctx is checked
// only then. It returns errors.ErrUnsupported where it cannot wait (a
// proxied connection, a platform without MSG_PEEK).
func (c *UDPClient) WaitReadable(ctx context.Context) error {
	if !canPeek {
		return errors.ErrUnsupported
	}
	for {
		c.lock.Lock()
		conn, rc, err := c.rawConnLocked()
		if err == nil {
			// No exchange runs while the lock is held; each sets its own.
			err = conn.SetReadDeadline(time.Time{})
		}
		c.lock.Unlock()
		if err != nil {
			return err
		}
		err = rc.Read(peekReady)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		return err
	}
}

// rawConnLocked returns the connection and its socket (labctl's patch):
// net.ErrClosed once closed, errors.ErrUnsupported for a connection
// without a socket of its own (a proxy). The caller holds c.lock.
func (c *UDPClient) rawConnLocked() (net.Conn, syscall.RawConn, error) {
	if c.conn == nil {
		return nil, nil, net.ErrClosed
	}
	sc, ok := c.conn.(syscall.Conn)
	if !ok {
		return nil, nil, errors.ErrUnsupported
	}
	rc, err := sc.SyscallConn()
	return c.conn, rc, err
}

// safeMatch runs match on one received datagram, turning a panic in its
// parsing into an error (labctl's patch: match runs on this package's own
// goroutine, where its caller cannot recover, and a malformed datagram
// must fail one exchange, not the process).
func safeMatch(match func(recv []byte) (bool, error), recv []byte) (ok bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("malformed packet from the BMC: %v", r)
		}
	}()
	return match(recv)
}

// Send writes one datagram and waits for nothing (labctl's patch: a SOL
// ACK-only packet, which the BMC does not answer).
func (c *UDPClient) Send(ctx context.Context, p []byte) error {
	if err := c.initConn(); err != nil {
		return fmt.Errorf("init udp connection failed, err: %w", err)
	}
	c.lock.Lock()
	defer c.lock.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("canceled from caller: %w", err)
	}
	if c.conn == nil {
		return fmt.Errorf("udp send: %w", net.ErrClosed)
	}
	if _, err := c.conn.Write(p); err != nil {
		return fmt.Errorf("write to conn failed, err: %w", err)
	}
	return nil
}

// maxReadWaiting bounds the datagrams one ReadWaiting takes: a peer that
// floods the socket cannot keep its reader in one call.
const maxReadWaiting = 64

// ReadWaiting hands fn each datagram already waiting on the socket (at
// most maxReadWaiting), without waiting for any (labctl's patch: a SOL
// stream woken by WaitReadable takes the output the BMC sent unasked
// instead of asking for it). It returns errors.ErrUnsupported where it
// cannot read without waiting, and a socket error (an ICMP refusal) as
// an exchange would.
func (c *UDPClient) ReadWaiting(fn func(recv []byte)) error {
	if !canPeek {
		return errors.ErrUnsupported
	}
	c.lock.Lock()
	defer c.lock.Unlock()
	_, rc, err := c.rawConnLocked()
	if err != nil {
		return err
	}
	if len(c.recvBuf) != c.bufferSize {
		c.recvBuf = make([]byte, c.bufferSize)
	}
	for range maxReadWaiting {
		var n int
		var readErr error
		if err := rc.Control(func(fd uintptr) { n, readErr = recvNow(fd, c.recvBuf) }); err != nil {
			return err
		}
		if errors.Is(readErr, errNothingWaiting) {
			return nil
		}
		if readErr != nil {
			return fmt.Errorf("read from conn failed, err: %w", readErr)
		}
		fn(append([]byte(nil), c.recvBuf[:n]...))
	}
	return nil
}

// errNothingWaiting is recvNow's answer when no datagram is waiting.
var errNothingWaiting = errors.New("no datagram waiting")

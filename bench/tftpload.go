package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TFTPLoad is one run of the TFTP storm: N clients ask for the same file at
// once and every byte they receive is compared with the reference copy.
type TFTPLoad struct {
	Addr    string // server, loopback host:port
	File    string // name to ask for
	Ref     []byte // what the file holds
	N       int
	BlkSize int // 0: ask for no block size (RFC 1350's 512)
	Window  int // 0: ask for no windowsize (lock-step)
	// Timeout is the client's wait for progress before it asks again, and
	// Retries how often in a row it asks before giving up: 1s and 5, the
	// values a PXE ROM in a hurry might use.
	Timeout time.Duration
	Retries int
	// Cap ends the run after this long (0: none); transfers still running
	// are cancelled with an ERROR packet, as a well-behaved client does.
	Cap time.Duration
}

// TFTPResult is what one run measured.
type TFTPResult struct {
	OK, Failed, Cut int            // completed, failed, still running at the cap
	Fails           map[string]int // why clients failed
	Bytes           int64          // received and verified, all clients
	Wall            time.Duration  // until the last client ended
	Durations       []float64      // seconds, completed transfers, sorted
	PerClientMBps   []float64      // each client's rate, sorted
	Timeouts        int            // times clients had to ask again
	Granted         string         // "blksize=1468 window=8" as the server granted it
}

// MBps is the aggregate rate: all bytes received over the wall time.
func (r TFTPResult) MBps() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Wall.Seconds()
}

// RunTFTP runs the load and returns when every client has ended.
func RunTFTP(ctx context.Context, l TFTPLoad) (TFTPResult, error) {
	if err := loopbackOnly(l.Addr); err != nil {
		return TFTPResult{}, err
	}
	server, err := net.ResolveUDPAddr("udp4", l.Addr)
	if err != nil {
		return TFTPResult{}, err
	}
	if l.Timeout == 0 {
		l.Timeout = time.Second
	}
	if l.Retries == 0 {
		l.Retries = 5
	}
	hard := 10 * time.Minute
	if l.Cap > 0 {
		hard = l.Cap
	}
	ctx, cancel := context.WithTimeout(ctx, hard)
	defer cancel()

	type one struct {
		err      string
		cut      bool
		bytes    int64
		dur      time.Duration
		timeouts int
		granted  string
	}
	res := make([]one, l.N)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range l.N {
		wg.Go(func() {
			c := tftpClient{load: &l, server: server}
			t0 := time.Now()
			err := c.get(ctx)
			r := one{bytes: c.off, dur: time.Since(t0), timeouts: c.timeouts,
				granted: fmt.Sprintf("blksize=%d window=%d", c.blk, c.win)}
			if err != nil {
				if errors.Is(err, errCut) {
					r.cut = true
				} else {
					r.err = err.Error()
				}
			}
			res[i] = r
		})
	}
	wg.Wait()
	out := TFTPResult{Fails: map[string]int{}, Wall: time.Since(start)}
	grants := map[string]int{}
	for _, r := range res {
		out.Bytes += r.bytes
		out.Timeouts += r.timeouts
		out.PerClientMBps = append(out.PerClientMBps, float64(r.bytes)/1e6/max(r.dur.Seconds(), 1e-6))
		switch {
		case r.cut:
			out.Cut++
		case r.err != "":
			out.Failed++
			out.Fails[r.err]++
		default:
			out.OK++
			out.Durations = append(out.Durations, r.dur.Seconds())
			grants[r.granted]++
		}
	}
	sort.Float64s(out.Durations)
	sort.Float64s(out.PerClientMBps)
	for g := range grants {
		out.Granted = g // all clients get the same grant from one server
	}
	return out, nil
}

// errCut marks a transfer cancelled at the run's cap.
var errCut = errors.New("cut at the cap")

// tftpClient is one RFC 1350 client with blksize, tsize (RFC 2348/2349)
// and windowsize (RFC 7440). With a window it ACKs each window's last
// block, and on a gap ACKs the last block it has in order, once; its
// timeout runs from the last progress, so duplicates do not keep it from
// asking again. In lock-step it re-ACKs a duplicate of the previous block.
type tftpClient struct {
	load     *TFTPLoad
	server   *net.UDPAddr
	off      int64
	blk, win int
	timeouts int
}

func (c *tftpClient) get(ctx context.Context) error {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	l := c.load
	c.blk, c.win = 512, 1
	rrq := []byte{0, 1}
	rrq = append(rrq, l.File...)
	rrq = append(rrq, "\x00octet\x00"...)
	if l.BlkSize > 0 {
		rrq = append(rrq, "blksize\x00"+strconv.Itoa(l.BlkSize)+"\x00"...)
	}
	rrq = append(rrq, "tsize\x000\x00"...)
	if l.Window > 0 {
		rrq = append(rrq, "windowsize\x00"+strconv.Itoa(l.Window)+"\x00"...)
	}
	last := rrq
	to := c.server
	var peer *net.UDPAddr
	ackbuf := make([]byte, 4)
	sendAck := func(b uint16) {
		binary.BigEndian.PutUint16(ackbuf, 4)
		binary.BigEndian.PutUint16(ackbuf[2:], b)
		last = ackbuf
		conn.WriteToUDP(ackbuf, peer)
	}
	if _, err := conn.WriteToUDP(rrq, to); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	buf := make([]byte, 65536)
	expect := uint16(1)
	inWindow, gapAcked, started := 0, false, false
	progress := time.Now()
	misses := 0
	for {
		conn.SetReadDeadline(progress.Add(l.Timeout))
		if ctx.Err() != nil {
			return c.cancel(conn, peer)
		}
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil {
				return c.cancel(conn, peer)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				misses++
				c.timeouts++
				if misses > l.Retries {
					return errors.New("timeout")
				}
				if peer == nil {
					conn.WriteToUDP(last, to)
				} else {
					conn.WriteToUDP(last, peer)
				}
				progress = time.Now()
				continue
			}
			return fmt.Errorf("read: %w", err)
		}
		if n < 4 {
			continue
		}
		if peer == nil {
			peer = from
		} else if from.Port != peer.Port || !from.IP.Equal(peer.IP) {
			conn.WriteToUDP([]byte("\x00\x05\x00\x05unknown transfer ID\x00"), from)
			continue
		}
		p := buf[:n]
		switch binary.BigEndian.Uint16(p) {
		case 6: // OACK
			if started {
				continue
			}
			started = true
			fields := strings.Split(strings.TrimRight(string(p[2:]), "\x00"), "\x00")
			for i := 0; i+1 < len(fields); i += 2 {
				v, _ := strconv.ParseInt(fields[i+1], 10, 64)
				switch strings.ToLower(fields[i]) {
				case "blksize":
					c.blk = int(v)
				case "windowsize":
					c.win = int(v)
				case "tsize":
					if v != int64(len(l.Ref)) {
						return fmt.Errorf("tsize %d, file has %d", v, len(l.Ref))
					}
				}
			}
			if c.blk < 8 || c.blk > 65464 || c.win < 1 {
				return fmt.Errorf("bad OACK %q", fields)
			}
			misses = 0
			progress = time.Now()
			sendAck(0)
		case 3: // DATA
			started = true
			b := binary.BigEndian.Uint16(p[2:])
			payload := p[4:]
			if b != expect {
				if c.win > 1 {
					if !gapAcked {
						sendAck(expect - 1)
						gapAcked, inWindow = true, 0
					}
				} else if b == expect-1 {
					sendAck(b) // our ACK was lost
				}
				continue
			}
			if len(payload) > c.blk {
				return errors.New("block larger than negotiated")
			}
			end := c.off + int64(len(payload))
			if end > int64(len(l.Ref)) || !bytes.Equal(payload, l.Ref[c.off:end]) {
				return errors.New("corrupt data")
			}
			c.off = end
			expect++
			inWindow++
			gapAcked = false
			misses = 0
			progress = time.Now()
			final := len(payload) < c.blk
			if final || inWindow >= c.win {
				sendAck(b)
				inWindow = 0
			}
			if final {
				if c.off != int64(len(l.Ref)) {
					return fmt.Errorf("short file: %d of %d bytes", c.off, len(l.Ref))
				}
				return nil
			}
		case 5: // ERROR
			msg := string(bytes.TrimRight(p[4:], "\x00"))
			return fmt.Errorf("server error %d: %s", binary.BigEndian.Uint16(p[2:]), msg)
		}
	}
}

// cancel tells the server the transfer is over (so it does not retry into
// the next run) and reports the cut.
func (c *tftpClient) cancel(conn *net.UDPConn, peer *net.UDPAddr) error {
	if peer != nil {
		conn.WriteToUDP([]byte("\x00\x05\x00\x00cancelled: bench time cap\x00"), peer)
	}
	return errCut
}

// loopbackOnly refuses any target but a loopback address: the bench sends
// load to servers it started itself, nowhere else.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("bench: %s is not a loopback address; the bench only loads servers it started on this machine", addr)
	}
	return nil
}

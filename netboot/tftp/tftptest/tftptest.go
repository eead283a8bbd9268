// Package tftptest is the client side that tests of a TFTP server need:
// whole-file reads through pin/tftp's client, and a raw client for the
// packets a client library would not send.
package tftptest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
)

// Get fetches name from the server at addr with pin/tftp's client, asking
// for the transfer size; blksize 0 asks for no block size. tsize is -1
// when the server did not say.
func Get(addr, name string, blksize int) (data []byte, tsize int64, err error) {
	return GetOpts(addr, name, blksize, 2*time.Second, 3)
}

// GetOpts is Get with the client's timeout and retries.
func GetOpts(addr, name string, blksize int, timeout time.Duration, retries int) (data []byte, tsize int64, err error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return nil, 0, err
	}
	c.SetTimeout(timeout)
	c.SetRetries(retries)
	if timeout < time.Second {
		// pin/tftp waits a random 0-1s before each retransmission.
		c.SetBackoff(func(int) time.Duration { return timeout / 4 })
	}
	c.RequestTSize(true)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, 0, err
	}
	tsize = -1
	if it, ok := wt.(tftp.IncomingTransfer); ok {
		if n, ok := it.Size(); ok {
			tsize = n
		}
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return nil, tsize, err
	}
	return b.Bytes(), tsize, nil
}

// RRQ is a read request packet for name in octet mode with the options
// (name, value, name, value, ...) built by hand.
func RRQ(name string, opts ...string) []byte {
	p := []byte{0, 1}
	p = append(p, name...)
	p = append(p, 0)
	p = append(p, "octet"...)
	p = append(p, 0)
	for _, o := range opts {
		p = append(p, o...)
		p = append(p, 0)
	}
	return p
}

// TFTP opcodes a server sends.
const (
	OpDATA  = 3
	OpACK   = 4
	OpERROR = 5
	OpOACK  = 6
)

// Packet is one packet a raw client received.
type Packet struct {
	Op    uint16
	Block uint16 // DATA, ACK
	Code  uint16 // ERROR
	Msg   string // ERROR
	Data  []byte // DATA; OACK: the options as sent
	From  *net.UDPAddr
}

// Read reads one packet from c, waiting at most timeout.
func Read(c *net.UDPConn, timeout time.Duration) (Packet, error) {
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(timeout))
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		return Packet{}, err
	}
	if n < 4 {
		return Packet{}, fmt.Errorf("short packet %x", buf[:n])
	}
	p := Packet{Op: binary.BigEndian.Uint16(buf), From: from}
	switch p.Op {
	case OpDATA:
		p.Block = binary.BigEndian.Uint16(buf[2:])
		p.Data = append([]byte(nil), buf[4:n]...)
	case OpACK:
		p.Block = binary.BigEndian.Uint16(buf[2:])
	case OpERROR:
		p.Code = binary.BigEndian.Uint16(buf[2:])
		p.Msg = strings.TrimRight(string(buf[4:n]), "\x00")
	case OpOACK:
		p.Data = append([]byte(nil), buf[2:n]...)
	}
	return p, nil
}

package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
)

// TFTP opcodes (RFC 1350, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// TFTP error codes (RFC 1350, RFC 2347).
const (
	errCodeUndefined     = 0
	errCodeNotFound      = 1
	errCodeAccess        = 2
	errCodeIllegalOp     = 4
	errCodeOptionRefused = 8
)

// Limits of the options a client may ask for (RFC 2348, RFC 7440).
const (
	minBlockSize  = 8
	maxBlockSize  = 65464
	maxWindowSize = 65535
)

// request is a parsed read or write request.
type request struct {
	op       uint16 // opRRQ or opWRQ
	filename string
	mode     string // lower case
	// options the server understands, as asked; 0 (or false) when not asked
	// or not parseable (an option we cannot read is ignored, as RFC 2347
	// allows, rather than failing the boot).
	blksize    int
	windowsize int
	tsize      bool
}

// errShortPacket and errNotRequest are what parseRequest returns for
// packets that are not requests; the server ignores those.
var (
	errShortPacket = errors.New("tftp: packet too short")
	errNotRequest  = errors.New("tftp: not a read or write request")
)

// requestError is a read or write request the server cannot take: the
// client is answered with an ERROR packet of this code and message, so it
// learns why instead of waiting for its timeout.
type requestError struct {
	code uint16
	msg  string
}

func (e *requestError) Error() string { return "tftp: " + e.msg }

// parseRequest reads an RRQ or WRQ: opcode, file name, mode and options,
// each NUL-terminated. It reads untrusted bytes from the network, so it
// checks every length and never panics (FuzzParseRequest). Option names are
// case-insensitive; unknown options, options without a value and values out
// of range are ignored. A request without a file name or mode is a
// *requestError (the server answers it); any mode is accepted here, the
// server decides what to do with it.
func parseRequest(p []byte) (request, error) {
	if len(p) < 2 {
		return request{}, errShortPacket
	}
	var r request
	r.op = binary.BigEndian.Uint16(p)
	if r.op != opRRQ && r.op != opWRQ {
		return request{}, errNotRequest
	}
	fields := bytes.Split(p[2:], []byte{0})
	// The packet ends with a NUL, so the last field is empty (or, if the
	// client did not end it, incomplete); it is not a value.
	last := len(fields) - 1
	if last < 2 {
		return request{}, &requestError{errCodeIllegalOp, "malformed request: no file name and mode"}
	}
	if len(fields[0]) == 0 {
		return request{}, &requestError{errCodeNotFound, ErrBadName.Error() + ": empty"}
	}
	if len(fields[1]) == 0 {
		return request{}, &requestError{errCodeIllegalOp, "malformed request: empty transfer mode"}
	}
	r.filename = string(fields[0])
	r.mode = strings.ToLower(string(fields[1]))
	seen := map[string]bool{}
	for i := 2; i+1 < last; i += 2 {
		name := strings.ToLower(string(fields[i]))
		if seen[name] {
			continue // the first value counts
		}
		seen[name] = true
		value := string(fields[i+1])
		switch name {
		case "blksize":
			if n, err := strconv.Atoi(value); err == nil && n >= minBlockSize && n <= maxBlockSize {
				r.blksize = n
			}
		case "windowsize":
			if n, err := strconv.Atoi(value); err == nil && n >= 1 && n <= maxWindowSize {
				r.windowsize = n
			}
		case "tsize":
			// A read request sends 0; any number asks for the size.
			if n, err := strconv.ParseInt(value, 10, 64); err == nil && n >= 0 {
				r.tsize = true
			}
		}
	}
	return r, nil
}

// appendOACK appends an OACK packet with the given name/value pairs.
func appendOACK(b []byte, kv ...string) []byte {
	b = append(b, 0, opOACK)
	for _, s := range kv {
		b = append(b, s...)
		b = append(b, 0)
	}
	return b
}

// appendError appends an ERROR packet.
func appendError(b []byte, code uint16, msg string) []byte {
	b = append(b, 0, opERROR, byte(code>>8), byte(code))
	b = append(b, msg...)
	return append(b, 0)
}

// parseAck returns the block number of an ACK packet.
func parseAck(p []byte) (block uint16, ok bool) {
	if len(p) < 4 || binary.BigEndian.Uint16(p) != opACK {
		return 0, false
	}
	return binary.BigEndian.Uint16(p[2:]), true
}

// parseError returns the code and message of an ERROR packet.
func parseError(p []byte) (code uint16, msg string, ok bool) {
	if len(p) < 4 || binary.BigEndian.Uint16(p) != opERROR {
		return 0, "", false
	}
	m := p[4:]
	if i := bytes.IndexByte(m, 0); i >= 0 {
		m = m[:i]
	}
	return binary.BigEndian.Uint16(p[2:]), string(m), true
}

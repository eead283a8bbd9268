package tftp

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzParseAckError reads any datagram a client may send during a transfer
// as an ACK and as an ERROR: never both, each exactly when the opcode says
// so and the packet holds one, and what appendError writes reads back.
func FuzzParseAckError(f *testing.F) {
	f.Add([]byte{0, opACK, 0, 1})
	f.Add([]byte{0, opACK, 0xff, 0xff, 'x'})
	f.Add([]byte{0, opACK, 0})
	f.Add(appendError(nil, errCodeNotFound, "file not found"))
	f.Add([]byte{0, opERROR, 0, 8, 'n', 'o'}) // without its NUL
	f.Add([]byte{0, opERROR, 0, 0, 0, 'x', 0})
	f.Add([]byte{0, opDATA, 0, 1, 'd'})
	f.Fuzz(func(t *testing.T, p []byte) {
		block, isAck := parseAck(p)
		code, msg, isErr := parseError(p)
		if isAck && isErr {
			t.Fatalf("% x is an ACK and an ERROR", p)
		}
		long := len(p) >= 4
		if isAck != (long && binary.BigEndian.Uint16(p) == opACK) || isErr != (long && binary.BigEndian.Uint16(p) == opERROR) {
			t.Fatalf("% x: ACK %v, ERROR %v", p, isAck, isErr)
		}
		if isAck && block != binary.BigEndian.Uint16(p[2:]) {
			t.Fatalf("% x: block %d", p, block)
		}
		if isErr {
			if code != binary.BigEndian.Uint16(p[2:]) || !bytes.HasPrefix(p[4:], []byte(msg)) || bytes.IndexByte([]byte(msg), 0) >= 0 {
				t.Fatalf("% x: code %d, message %q", p, code, msg)
			}
		}
		// An ERROR packet of ours reads back as it was written.
		text := string(bytes.ReplaceAll(p, []byte{0}, nil))
		c := uint16(len(p))
		code, msg, isErr = parseError(appendError(nil, c, text))
		if !isErr || code != c || msg != text {
			t.Fatalf("ERROR %d %q read back as %v %d %q", c, text, isErr, code, msg)
		}
	})
}

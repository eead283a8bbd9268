package api

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/labctl/labctl"
)

// The console wire format, after the HTTP Upgrade: a stream of frames in
// each direction,
//
//	type (1 byte) | payload length (unsigned LEB128 varint, at most 64 KiB) | payload
//
// Daemon to viewer:
//
//	'o' console output, raw bytes
//	'n' a notice, JSON ConsoleNotice
//	's' the console state, JSON ConsoleState
//	'h' heartbeat, empty: sent after 15 s without other frames, so the
//	    viewer can tell a quiet console from a dead connection
//
// Viewer to daemon:
//
//	'i' input to type, raw bytes
//	'w' window size: rows, cols (2 bytes each, big endian)
//	'b' send a break, empty
//	'p' power-cycle the node, empty (the viewer has asked its person)
//
// A frame of a type the receiver does not know is skipped (newer peers
// may send more kinds). A payload over 64 KiB is a protocol error that
// ends the connection: output is sent in pieces.

// Frame types.
const (
	frameOutput    byte = 'o'
	frameNotice    byte = 'n'
	frameState     byte = 's'
	frameHeartbeat byte = 'h'
	frameInput     byte = 'i'
	frameResize    byte = 'w'
	frameBreak     byte = 'b'
	framePower     byte = 'p'
)

// maxFramePayload bounds one frame's payload.
const maxFramePayload = 64 << 10

// errFrameTooLarge is a frame whose length says more than maxFramePayload.
var errFrameTooLarge = errors.New("console frame over 64 KiB")

// frame is one decoded frame; payload aliases the reader's buffer until
// the next read.
type frame struct {
	typ     byte
	payload []byte
}

// appendFrame appends one frame to dst. payload must not exceed
// maxFramePayload (appendFrames splits longer data).
func appendFrame(dst []byte, typ byte, payload []byte) []byte {
	dst = append(dst, typ)
	dst = binary.AppendUvarint(dst, uint64(len(payload)))
	return append(dst, payload...)
}

// appendFrames appends data as frames of typ, each at most
// maxFramePayload (an empty data makes one empty frame).
func appendFrames(dst []byte, typ byte, data []byte) []byte {
	for {
		n := min(len(data), maxFramePayload)
		dst = appendFrame(dst, typ, data[:n])
		data = data[n:]
		if len(data) == 0 {
			return dst
		}
	}
}

// frameReader reads frames from a stream.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
}

func newFrameReader(r io.Reader) *frameReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 16<<10)
	}
	return &frameReader{r: br}
}

// next reads one frame. Its payload is valid until the next call. io.EOF
// means the stream ended between frames; a stream that ends inside a frame
// is io.ErrUnexpectedEOF.
func (fr *frameReader) next() (frame, error) {
	typ, err := fr.r.ReadByte()
	if err != nil {
		return frame{}, err
	}
	n, err := binary.ReadUvarint(fr.r)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, fmt.Errorf("console frame %q: length: %w", typ, err)
	}
	if n > maxFramePayload {
		return frame{}, fmt.Errorf("console frame %q: %d bytes: %w", typ, n, errFrameTooLarge)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n, max(int(n), 4096))
	}
	p := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, fmt.Errorf("console frame %q: payload: %w", typ, err)
	}
	return frame{typ: typ, payload: p}, nil
}

// appendMessage appends a message for a viewer as frames.
func appendMessage(dst []byte, m labctl.ConsoleMessage) ([]byte, error) {
	switch {
	case m.Output != nil:
		return appendFrames(dst, frameOutput, m.Output), nil
	case m.Notice != nil:
		b, err := json.Marshal(m.Notice)
		if err != nil {
			return dst, err
		}
		return appendFrame(dst, frameNotice, b), nil
	case m.State != nil:
		b, err := json.Marshal(m.State)
		if err != nil {
			return dst, err
		}
		return appendFrame(dst, frameState, b), nil
	}
	return dst, nil
}

// decodeMessage turns a frame from the daemon into a message; ok is false
// for frames that carry none (heartbeats, unknown types).
func decodeMessage(f frame) (m labctl.ConsoleMessage, ok bool, err error) {
	switch f.typ {
	case frameOutput:
		return labctl.ConsoleMessage{Output: append([]byte{}, f.payload...)}, true, nil
	case frameNotice:
		var n labctl.ConsoleNotice
		if err := json.Unmarshal(f.payload, &n); err != nil {
			return m, false, fmt.Errorf("console notice: %w", err)
		}
		return labctl.ConsoleMessage{Notice: &n}, true, nil
	case frameState:
		var s labctl.ConsoleState
		if err := json.Unmarshal(f.payload, &s); err != nil {
			return m, false, fmt.Errorf("console state: %w", err)
		}
		return labctl.ConsoleMessage{State: &s}, true, nil
	}
	return m, false, nil
}

// appendResize appends a window size frame; sizes are clamped to 0..65535.
func appendResize(dst []byte, w labctl.WindowSize) []byte {
	var p [4]byte
	binary.BigEndian.PutUint16(p[0:], clamp16(w.Rows))
	binary.BigEndian.PutUint16(p[2:], clamp16(w.Cols))
	return appendFrame(dst, frameResize, p[:])
}

func clamp16(v int) uint16 {
	return uint16(min(max(v, 0), 0xffff))
}

// decodeResize reads a window size frame's payload.
func decodeResize(p []byte) (labctl.WindowSize, error) {
	if len(p) != 4 {
		return labctl.WindowSize{}, fmt.Errorf("console window size: %d bytes, want 4", len(p))
	}
	return labctl.WindowSize{Rows: int(binary.BigEndian.Uint16(p[0:])), Cols: int(binary.BigEndian.Uint16(p[2:]))}, nil
}

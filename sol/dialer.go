package sol

import (
	"context"
	"errors"
	"io"
)

// Dialer opens console streams for a Session. A Session dials once in Open
// and again each time the stream drops.
type Dialer interface {
	// Dial opens a new console stream. Read returns an error (io.EOF or
	// anything else) when the console session ends; Close ends the session
	// and must make a Read blocked in another goroutine return.
	Dial(ctx context.Context) (io.ReadWriteCloser, error)
	// Target names what Dial connects to, for errors, logs and the
	// transcript, e.g. "bmc 127.0.0.1:16230". It never contains a secret.
	Target() string
}

// StreamDialer makes a Dialer of any function that opens a console stream.
// This is how the native IPMI driver plugs in:
//
//	sol.StreamDialer("bmc 10.0.0.5:623 (native SOL)", client.OpenSOL)
func StreamDialer(target string, open func(ctx context.Context) (io.ReadWriteCloser, error)) Dialer {
	return streamDialer{target: target, open: open}
}

type streamDialer struct {
	target string
	open   func(ctx context.Context) (io.ReadWriteCloser, error)
}

func (d streamDialer) Dial(ctx context.Context) (io.ReadWriteCloser, error) { return d.open(ctx) }
func (d streamDialer) Target() string                                       { return d.target }

var (
	// ErrClosedByBMC is wrapped by a stream's Read error when the BMC ended
	// the SOL session (ipmitool says "SOL session closed by BMC"). Drivers
	// that see the equivalent condition wrap it too: bmc's native SOL
	// streams, soltest's fake console.
	ErrClosedByBMC = errors.New("SOL session closed by BMC")
	// ErrClosed is returned by operations on a closed Session, Subscription
	// or stream.
	ErrClosed = errors.New("console session closed")
	// ErrNotWriter is returned by a Writer whose claim was taken over by
	// another owner or released.
	ErrNotWriter = errors.New("not the console's writer")
	// ErrBusy is returned by Claim when another owner writes to the console.
	ErrBusy = errors.New("console has another writer")
	// ErrNoEcho is wrapped by Type with Pacing.StrictEcho when a character
	// did not echo: the console lost it.
	ErrNoEcho = errors.New("character lost: no echo")
)

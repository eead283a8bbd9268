package simlab

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

func TestIsSOLPayload(t *testing.T) {
	rmcp := []byte{0x06, 0x00, 0xff, 0x07}
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"SOL, encrypted and authenticated", append(rmcp, 0x06, 0xc1, 0, 0), true},
		{"SOL, plain", append(rmcp, 0x06, 0x01), true},
		{"IPMI message", append(rmcp, 0x06, 0xc0), false},
		{"open session request", append(rmcp, 0x06, 0x10), false},
		{"IPMI 1.5 session", append(rmcp, 0x00, 0x01), false},
		{"ASF ping", []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0, 0, 0}, false},
		{"short", []byte{0x06, 0x00, 0xff, 0x07, 0x06}, false},
		{"empty", nil, false},
	}
	for _, tc := range tests {
		if got := isSOLPayload(tc.b); got != tc.want {
			t.Errorf("%s: isSOLPayload(% x) = %v, want %v", tc.name, tc.b, got, tc.want)
		}
	}
}

// FuzzIsSOLPayload: the front classifies every datagram a client sends;
// it must never panic on any of them.
func FuzzIsSOLPayload(f *testing.F) {
	f.Add([]byte{0x06, 0x00, 0xff, 0x07, 0x06, 0xc1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if isSOLPayload(b) && len(b) < 6 {
			t.Fatalf("short datagram % x classified as SOL", b)
		}
	})
}

// TestFront runs the front against an echo "BMC": datagrams pass both
// ways, silence drops them (and counts), and ending SOL clients sends a
// zero-length datagram only to clients that spoke SOL.
func TestFront(t *testing.T) {
	bmc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer bmc.Close()
	go func() { // echo server
		b := make([]byte, 1500)
		for {
			n, a, err := bmc.ReadFromUDP(b)
			if err != nil {
				return
			}
			_, _ = bmc.WriteToUDP(b[:n], a)
		}
	}()
	pub, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := newFront([]*net.UDPConn{pub}, bmc.LocalAddr().(*net.UDPAddr), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	dial := func() *net.UDPConn {
		c, err := net.DialUDP("udp4", nil, pub.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	roundTrip := func(c *net.UDPConn, msg []byte) ([]byte, error) {
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		b := make([]byte, 1500)
		n, err := c.Read(b)
		return b[:n], err
	}
	sol := []byte{0x06, 0x00, 0xff, 0x07, 0x06, 0xc1, 'x'}
	plain := []byte{0x06, 0x00, 0xff, 0x07, 0x06, 0xc0, 'y'}
	solClient, otherClient := dial(), dial()
	if got, err := roundTrip(solClient, sol); err != nil || string(got) != string(sol) {
		t.Fatalf("SOL datagram through the front: %q, %v", got, err)
	}
	if got, err := roundTrip(otherClient, plain); err != nil || string(got) != string(plain) {
		t.Fatalf("IPMI datagram through the front: %q, %v", got, err)
	}
	if n := f.solClients(); n != 1 {
		t.Errorf("solClients = %d, want 1", n)
	}

	f.silence(time.Hour)
	if got, err := roundTrip(otherClient, plain); err == nil {
		t.Errorf("silent front answered %q", got)
	}
	if until, dropped := f.state(); until.IsZero() || dropped == 0 {
		t.Errorf("silence state: until %v dropped %d", until, dropped)
	}
	f.silence(0)
	if _, err := roundTrip(otherClient, plain); err != nil {
		t.Errorf("after the silence: %v", err)
	}

	if told := f.endSOLClients(); told != 1 {
		t.Errorf("endSOLClients told %d clients, want 1", told)
	}
	_ = solClient.SetDeadline(time.Now().Add(time.Second))
	b := make([]byte, 1500)
	if n, err := solClient.Read(b); err != nil || n != 0 {
		t.Errorf("SOL client: want a zero-length datagram, got %d bytes, %v", n, err)
	}
	_ = otherClient.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := otherClient.Read(b); err == nil {
		t.Errorf("non-SOL client got %d bytes from endSOLClients", n)
	}
}

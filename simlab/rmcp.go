package simlab

import (
	"bytes"
	"fmt"
	"net"
	"time"
)

// rmcpPing sends an RMCP/ASF presence ping to a BMC and waits for its pong:
// the cheapest way to know ipmi_sim is listening (no session, no password).
func rmcpPing(addr string, timeout time.Duration) error {
	conn, err := net.Dial("udp4", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	// RMCP v1.0, seq 0xff (no ack), class ASF; ASF IANA 4542, type ping, tag 0x51.
	ping := []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x51, 0x00, 0x00}
	if _, err := conn.Write(ping); err != nil {
		return err
	}
	buf := make([]byte, 128)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if n < 12 || !bytes.Equal(buf[4:8], ping[4:8]) || buf[8] != 0x40 {
		return fmt.Errorf("rmcp ping %s: unexpected answer % x", addr, buf[:n])
	}
	return nil
}

package netboot

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// cork holds back partial segments on c, a TCP connection (TCP_CORK),
// until the function it returns is called, which sends them. On a
// connection without a socket of its own (TLS) it does nothing.
func cork(c net.Conn) (uncork func()) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return func() {}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	set := func(on int) {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, on) })
	}
	set(1)
	return func() { set(0) }
}

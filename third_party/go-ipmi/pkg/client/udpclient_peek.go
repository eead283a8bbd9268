//go:build linux || darwin || freebsd || netbsd || openbsd

package client

import "syscall"

// canPeek says whether WaitReadable can wait for a datagram without
// taking it (labctl's patch).
const canPeek = true

// peekReady is WaitReadable's read callback: it says whether a datagram is
// waiting, without taking it (labctl's patch). A socket error (an ICMP
// refusal) also counts as ready: the exchange that follows reports it.
func peekReady(fd uintptr) bool {
	var b [1]byte
	for {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		return true
	}
}

// recvNow reads one waiting datagram into buf without waiting (labctl's
// patch), or says errNothingWaiting.
func recvNow(fd uintptr, buf []byte) (int, error) {
	for {
		n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
		switch err {
		case nil:
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, errNothingWaiting
		}
		return 0, err
	}
}

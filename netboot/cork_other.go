//go:build !linux

package netboot

import "net"

// cork does nothing where there is no TCP_CORK.
func cork(net.Conn) (uncork func()) { return func() {} }

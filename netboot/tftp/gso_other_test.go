//go:build !linux || tftp_portable

package tftp

// gsoInUse is false where transfers do not run in the epoll loop.
func gsoInUse(*Server) bool { return false }

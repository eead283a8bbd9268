//go:build !tftp_portable

package tftp

// gsoInUse reports whether windows still go out with UDP segmentation
// offload.
func gsoInUse(s *Server) bool { return s.loop.gso.Load() }

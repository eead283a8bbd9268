package netboot

import (
	"sync/atomic"

	"github.com/labctl/labctl/netboot/tftp"
)

// Stats are the boot server's counters since it was made, for metrics.
type Stats struct {
	TFTP tftp.Stats // zero without TFTP
	HTTP HTTPStats
}

// HTTPStats count the HTTP server's requests.
type HTTPStats struct {
	Requests int64 // answered, whatever the status
	Errors   int64 // answered with a status of 400 or more (refusals when busy included)
	Bytes    int64 // response body bytes written
}

// httpCounters are the HTTP server's counters, updated once per request.
type httpCounters struct {
	requests, errors, bytes atomic.Int64
}

func (c *httpCounters) count(status int, bytes int64) {
	c.requests.Add(1)
	if status >= 400 {
		c.errors.Add(1)
	}
	c.bytes.Add(bytes)
}

// Stats returns the server's counters. Reading them costs a few atomic
// loads: a metrics scrape reads them when it happens, and the transfers
// only add to counters.
func (s *Server) Stats() Stats {
	var st Stats
	if s.tftp != nil {
		st.TFTP = s.tftp.Stats()
	}
	st.HTTP = HTTPStats{Requests: s.httpStats.requests.Load(), Errors: s.httpStats.errors.Load(), Bytes: s.httpStats.bytes.Load()}
	return st
}

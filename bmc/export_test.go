package bmc

import "time"

// SetSOLVouch sets how recent a SOL exchange the BMC answered must be to
// vouch for a stream without asking (see solStream.Check); 0 always asks.
func SetSOLVouch(c *Client, d time.Duration) { c.t.solVouch = d }

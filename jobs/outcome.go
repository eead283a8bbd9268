package jobs

import "fmt"

// Priority orders the queue: high before normal before low, first come
// first served within one priority.
type Priority string

// The priorities.
const (
	High   Priority = "high"
	Normal Priority = "normal"
	Low    Priority = "low"
)

// UnmarshalText accepts high, normal or low.
func (p *Priority) UnmarshalText(text []byte) error {
	switch v := Priority(text); v {
	case High, Normal, Low:
		*p = v
		return nil
	}
	return fmt.Errorf("%q is not a priority: use high, normal or low", text)
}

// Rank orders priorities: a job with a higher rank runs first.
func (p Priority) Rank() int {
	switch p {
	case High:
		return 2
	case Low:
		return 0
	}
	return 1
}

// Outcome is how a job ended.
type Outcome string

// The outcomes.
const (
	// Complete: every test step ended as expected.
	Complete Outcome = "complete"
	// Failed: a test step failed unexpectedly (or passed when expected to fail).
	Failed Outcome = "failed"
	// Incomplete: the lab, not the test, went wrong (which action, and why).
	Incomplete Outcome = "incomplete"
	// Canceled: someone canceled the job, or it ran out of time.
	Canceled Outcome = "canceled"
)

// ExitCode is the labctl exit status for a job that ended with o: 0
// complete, 1 failed, 2 incomplete, 3 canceled. An unknown outcome counts
// as incomplete.
func (o Outcome) ExitCode() int {
	switch o {
	case Complete:
		return 0
	case Failed:
		return 1
	case Canceled:
		return 3
	}
	return 2
}

// UnmarshalText accepts the four outcomes, so that results read back from
// JSON or a store are checked.
func (o *Outcome) UnmarshalText(text []byte) error {
	switch v := Outcome(text); v {
	case Complete, Failed, Incomplete, Canceled:
		*o = v
		return nil
	}
	return fmt.Errorf("%q is not an outcome: want complete, failed, incomplete or canceled", text)
}

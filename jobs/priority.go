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

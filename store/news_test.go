package store

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// An announcement names the jobs submitted, up to maxAnnounced; past
// that, or after any other change, it says to read the whole queue, and
// what it names reads back as it was sent.
func TestQueueNews(t *testing.T) {
	var n queueNews
	for id := int64(1); id <= 3; id++ {
		n.add(id)
	}
	if got := parseNews(n.payload()); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Errorf("3 submits: payload %q reads as %v", n.payload(), got)
	}
	n.add(0)
	n.add(4)
	if p := n.payload(); p != "" || parseNews(p) != nil {
		t.Errorf("after a cancel: payload %q, want empty (read whole)", p)
	}

	var big queueNews
	for i := range maxAnnounced {
		big.add(1<<62 + int64(i)) // the longest IDs
	}
	p := big.payload()
	if len(p) >= 8000 || len(parseNews(p)) != maxAnnounced {
		t.Errorf("%d submits of 19-digit IDs: payload of %d bytes naming %d jobs; want under 8000 bytes, all named", maxAnnounced, len(p), len(parseNews(p)))
	}
	big.add(7)
	if p := big.payload(); p != "" {
		t.Errorf("%d submits: payload of %d bytes, want empty (read whole)", maxAnnounced+1, len(p))
	}

	for _, bad := range []string{"", "x", "1,,2", "1,-2", "0", "1, 2", "99999999999999999999", strings.Repeat("1,", 4001) + "1"} {
		if got := parseNews(bad); got != nil {
			t.Errorf("payload %q reads as %v, want nil (read whole)", bad, got)
		}
	}
	if got := parseNews(strconv.Itoa(42)); !slices.Equal(got, []int64{42}) {
		t.Errorf("payload 42 reads as %v", got)
	}
}

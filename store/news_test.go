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
	submit := func(id int64) QueueNews { return QueueNews{Submitted: []int64{id}} }
	var n QueueNews
	for id := int64(1); id <= 3; id++ {
		n.Add(submit(id), maxAnnounced)
	}
	if got := parseNews(n.payload()); got.Whole || !slices.Equal(got.Submitted, []int64{1, 2, 3}) {
		t.Errorf("3 submits: payload %q reads as %+v", n.payload(), got)
	}
	n.Add(QueueNews{Whole: true}, maxAnnounced)
	n.Add(submit(4), maxAnnounced)
	if p := n.payload(); p != "" || !parseNews(p).Whole {
		t.Errorf("after a cancel: payload %q, want empty (read whole)", p)
	}

	var big QueueNews
	for i := range maxAnnounced {
		big.Add(submit(1<<62+int64(i)), maxAnnounced) // the longest IDs
	}
	p := big.payload()
	if len(p) >= 8000 || len(parseNews(p).Submitted) != maxAnnounced {
		t.Errorf("%d submits of 19-digit IDs: payload of %d bytes naming %d jobs; want under 8000 bytes, all named", maxAnnounced, len(p), len(parseNews(p).Submitted))
	}
	big.Add(submit(7), maxAnnounced)
	if p := big.payload(); p != "" {
		t.Errorf("%d submits: payload of %d bytes, want empty (read whole)", maxAnnounced+1, len(p))
	}
	if !(QueueNews{}).Empty() || big.Empty() || n.Empty() {
		t.Errorf("Empty: none %v, whole %v, after a cancel %v; want true, false, false", (QueueNews{}).Empty(), big.Empty(), n.Empty())
	}

	for _, bad := range []string{"", "x", "1,,2", "1,-2", "0", "1, 2", "99999999999999999999", strings.Repeat("1,", 4001) + "1"} {
		if got := parseNews(bad); !got.Whole || got.Submitted != nil {
			t.Errorf("payload %q reads as %+v, want Whole", bad, got)
		}
	}
	if got := parseNews(strconv.Itoa(42)); got.Whole || !slices.Equal(got.Submitted, []int64{42}) {
		t.Errorf("payload 42 reads as %+v", got)
	}
}

package simlab

import "testing"

// TestBreakFilter: ipmi_sim's break command (IAC BRK) is dropped, also
// when it spans two reads; any other byte, FFh included, goes through.
func TestBreakFilter(t *testing.T) {
	tests := []struct {
		chunks  []string
		want    string
		dropped int
	}{
		{[]string{"echo hi\r"}, "echo hi\r", 0},
		{[]string{"\xff\xf3"}, "", 1},
		{[]string{"ab\xff\xf3cd"}, "abcd", 1},
		{[]string{"ab\xff", "\xf3cd"}, "abcd", 1},
		{[]string{"\xff\xf3\xff\xf3x"}, "x", 2},
		{[]string{"\xffz", "\xff", "\xff\xf3"}, "\xffz\xff", 1},
	}
	for _, tt := range tests {
		var f breakFilter
		var got []byte
		dropped := 0
		for _, c := range tt.chunks {
			var n int
			got, n = f.filter(got, []byte(c))
			dropped += n
		}
		if string(got) != tt.want || dropped != tt.dropped {
			t.Errorf("%q: got %q, %d dropped; want %q, %d", tt.chunks, got, dropped, tt.want, tt.dropped)
		}
	}
}

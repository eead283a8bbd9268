package dispatcher

import "testing"

// The written image's digest is found in sha256sum's output, also when a
// late echo of the typed command lands in front of it (its last letter
// may be a hex digit), and never in a line that is not sha256sum's.
func TestSHA256Line(t *testing.T) {
	const d = "bcb88e103f11cb4dd72da8f1d3c27874d6231cc17c0c829031d3255a37398b32"
	for _, tc := range []struct {
		out, want string
	}{
		{d + "  -\r\n", d},
		{"s " + d + "  -\r\n", d},
		{"noise\r\n" + d + "  -\r\n", d},
		{"sync" + d + "  -\r\n", d},
		{d + "\r\n", ""},                  // not sha256sum's line
		{d[:63] + "  -\r\n", ""},          // too short
		{"sha256sum: can't open\r\n", ""}, // no digest at all
	} {
		got := ""
		if m := sha256Line.FindStringSubmatch(tc.out); m != nil {
			got = m[1]
		}
		if got != tc.want {
			t.Errorf("%q: digest %q, want %q", tc.out, got, tc.want)
		}
	}
}

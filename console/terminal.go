package console

// A viewer's terminal answers queries the node sends: busybox asks for the
// cursor position (ESC [ 6 n) after every prompt, and every attached
// terminal answers (ESC [ 24 ; 1 R). The writer's answer goes to the node,
// as it would on a console of its own; a read-only viewer's is dropped
// silently (it is nobody typing, so it neither takes write nor earns a
// "read-only" notice). The replay on attach leaves queries out: a terminal
// would answer old ones, and the answers would land on the node's command
// line.

// csiReport returns the length of the terminal report p starts with: a
// cursor position report (ESC [ row ; col R), a device attributes answer
// (ESC [ ? 1 ; 2 c, ESC [ > 0 ; 10 ; 1 c) or a status report (ESC [ 0 n);
// 0 if p does not start with one.
func csiReport(p []byte) int {
	n := csiQueryOrReport(p)
	if n == 0 {
		return 0
	}
	// A report has parameters; a query may have none (ESC [ c).
	for _, b := range p[2 : n-1] {
		if b >= '0' && b <= '9' {
			return n
		}
	}
	return 0
}

// csiQueryOrReport returns the length of the CSI sequence p starts with
// if it is a query or report (final byte R, c or n, parameters digits and
// ';', optionally after '?' or '>'), else 0.
func csiQueryOrReport(p []byte) int {
	if len(p) < 3 || p[0] != 0x1b || p[1] != '[' {
		return 0
	}
	i := 2
	if p[i] == '?' || p[i] == '>' {
		i++
	}
	for i < len(p) && (p[i] >= '0' && p[i] <= '9' || p[i] == ';') {
		i++
	}
	if i < len(p) && (p[i] == 'R' || p[i] == 'c' || p[i] == 'n') {
		return i + 1
	}
	return 0
}

// dropTerminalReports returns p without the terminal reports in it (p
// itself if it has none).
func dropTerminalReports(p []byte) []byte {
	var out []byte
	for i := 0; i < len(p); {
		if n := csiReport(p[i:]); n > 0 {
			if out == nil {
				out = append(make([]byte, 0, len(p)), p[:i]...)
			}
			i += n
			continue
		}
		if out != nil {
			out = append(out, p[i])
		}
		i++
	}
	if out == nil {
		return p
	}
	return out
}

// stripQueries returns console output without the queries that make a
// terminal answer (ESC [ 6 n, ESC [ c, ...): for replays.
func stripQueries(p []byte) []byte {
	out := p[:0:0]
	for i := 0; i < len(p); {
		if p[i] == 0x1b {
			if n := csiQueryOrReport(p[i:]); n > 0 && p[i+n-1] != 'R' {
				i += n
				continue
			}
		}
		out = append(out, p[i])
		i++
	}
	return out
}

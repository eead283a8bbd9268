package tomlfile

import (
	"strconv"
	"strings"
)

// Key paths name a value in a document the way problems report it:
// "deploy.sha256", "test[1].name", `override."odd key"`. Array-of-tables
// elements and inline-array elements carry their index; pieces that are not
// bare TOML keys are double-quoted.

// joinKey returns the path of key inside the table at path parent.
func joinKey(parent, key string) string {
	if !isBareKey(key) {
		key = strconv.Quote(key)
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// indexKey returns the path of element i of the array at path parent.
func indexKey(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// parentKey returns the path of the table or array that holds path, or ""
// for a top-level key.
func parentKey(path string) string {
	last := 0 // start of the last segment
	for i := 0; i < len(path); {
		switch c := path[i]; {
		case c == '[':
			last = i
			end := strings.IndexByte(path[i:], ']')
			if end < 0 {
				return path[:last]
			}
			i += end + 1
		case c == '.':
			i++
		case c == '"':
			last = i
			q, err := strconv.QuotedPrefix(path[i:])
			if err != nil {
				return path[:last]
			}
			i += len(q)
		default:
			last = i
			for i < len(path) && path[i] != '.' && path[i] != '[' {
				i++
			}
		}
	}
	return strings.TrimSuffix(path[:last], ".")
}

func isBareKey(key string) bool {
	if key == "" {
		return false
	}
	for _, r := range key {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// maxNesting bounds how deep the scanner follows nested arrays and inline
// tables; deeper values are skipped byte by byte.
const maxNesting = 64

// keyLines finds the line where each key of a TOML document is defined.
// BurntSushi/toml reports no position for a key it did not decode, so this
// small scanner walks the text itself: table headers, dotted keys, quoted
// keys, multi-line strings and arrays, inline tables. It is meant for
// documents that already parsed; on anything else it returns what it found
// and never fails.
func keyLines(src string) map[string]int {
	s := &keyScanner{src: src, line: 1, lines: map[string]int{}, arrays: map[string]int{}}
	table := ""
	for {
		s.skipBlank(true)
		if s.pos >= len(s.src) {
			return s.lines
		}
		start := s.pos
		if s.src[s.pos] == '[' {
			table = s.header()
		} else {
			s.keyValue(table, 0)
		}
		s.skipRestOfLine()
		if s.pos == start {
			s.advance()
		}
	}
}

type keyScanner struct {
	src    string
	pos    int
	line   int
	lines  map[string]int // key path -> line of its first definition
	arrays map[string]int // array-of-tables path -> elements seen so far
}

func (s *keyScanner) record(path string, line int) {
	if _, ok := s.lines[path]; !ok {
		s.lines[path] = line
	}
}

func (s *keyScanner) peek() byte {
	if s.pos < len(s.src) {
		return s.src[s.pos]
	}
	return 0
}

func (s *keyScanner) advance() {
	if s.pos < len(s.src) {
		if s.src[s.pos] == '\n' {
			s.line++
		}
		s.pos++
	}
}

// skipBlank skips spaces, tabs, comments and, if newlines is set, line ends.
func (s *keyScanner) skipBlank(newlines bool) {
	for s.pos < len(s.src) {
		switch s.src[s.pos] {
		case ' ', '\t', '\r':
			s.pos++
		case '\n':
			if !newlines {
				return
			}
			s.advance()
		case '#':
			for s.pos < len(s.src) && s.src[s.pos] != '\n' {
				s.pos++
			}
		default:
			return
		}
	}
}

func (s *keyScanner) skipRestOfLine() {
	for s.pos < len(s.src) && s.src[s.pos] != '\n' {
		s.pos++
	}
}

// header reads "[a.b]" or "[[a.b]]" and returns the table's indexed path.
func (s *keyScanner) header() string {
	line := s.line
	s.pos++
	array := s.peek() == '['
	if array {
		s.pos++
	}
	pieces := s.keyPieces()
	path := ""
	for i, piece := range pieces {
		path = joinKey(path, piece)
		if array && i == len(pieces)-1 {
			n := s.arrays[path]
			s.arrays[path] = n + 1
			s.record(path, line)
			path = indexKey(path, n)
		} else if n, ok := s.arrays[path]; ok && n > 0 {
			path = indexKey(path, n-1)
		}
		s.record(path, line)
	}
	return path
}

// keyValue reads "key = value" (key possibly dotted) inside table.
func (s *keyScanner) keyValue(table string, depth int) {
	line := s.line
	pieces := s.keyPieces()
	s.skipBlank(false)
	if len(pieces) == 0 || s.peek() != '=' {
		return
	}
	s.pos++
	path := table
	for _, piece := range pieces {
		path = joinKey(path, piece)
		s.record(path, line)
	}
	s.value(path, depth)
}

// keyPieces reads a possibly dotted key and returns its pieces unquoted.
func (s *keyScanner) keyPieces() []string {
	var pieces []string
	for {
		s.skipBlank(false)
		piece, ok := s.keyPiece()
		if !ok {
			return pieces
		}
		pieces = append(pieces, piece)
		s.skipBlank(false)
		if s.peek() != '.' {
			return pieces
		}
		s.pos++
	}
}

func (s *keyScanner) keyPiece() (string, bool) {
	switch s.peek() {
	case '"':
		start := s.pos
		s.pos++
		s.skipString('"', true)
		raw := s.src[start:s.pos]
		if unquoted, err := strconv.Unquote(raw); err == nil {
			return unquoted, true
		}
		return strings.Trim(raw, `"`), true
	case '\'':
		start := s.pos + 1
		s.pos++
		s.skipString('\'', false)
		return strings.TrimSuffix(s.src[start:s.pos], "'"), true
	}
	start := s.pos
	for s.pos < len(s.src) && !strings.ContainsRune(" \t\r\n.=[]\"'#,{}", rune(s.src[s.pos])) {
		s.pos++
	}
	return s.src[start:s.pos], s.pos > start
}

// skipString skips the rest of a one-line string up to and including quote.
func (s *keyScanner) skipString(quote byte, escapes bool) {
	for s.pos < len(s.src) && s.src[s.pos] != '\n' {
		c := s.src[s.pos]
		s.pos++
		switch {
		case c == quote:
			return
		case c == '\\' && escapes && s.pos < len(s.src) && s.src[s.pos] != '\n':
			s.pos++
		}
	}
}

// skipMultiline skips the rest of a multi-line string up to and including
// its closing delimiter (three quotes, plus up to two quotes of content).
func (s *keyScanner) skipMultiline(quote byte, escapes bool) {
	delim := strings.Repeat(string(quote), 3)
	for s.pos < len(s.src) {
		if escapes && s.src[s.pos] == '\\' {
			s.advance()
			s.advance()
			continue
		}
		if strings.HasPrefix(s.src[s.pos:], delim) {
			s.pos += len(delim)
			for i := 0; i < 2 && s.peek() == quote; i++ {
				s.pos++
			}
			return
		}
		s.advance()
	}
}

// value skips one value, recording the keys of inline tables and the
// elements of arrays under path.
func (s *keyScanner) value(path string, depth int) {
	s.skipBlank(false)
	rest := s.src[s.pos:]
	switch {
	case depth > maxNesting:
		return
	case strings.HasPrefix(rest, `"""`):
		s.pos += 3
		s.skipMultiline('"', true)
	case strings.HasPrefix(rest, `'''`):
		s.pos += 3
		s.skipMultiline('\'', false)
	case strings.HasPrefix(rest, `"`):
		s.pos++
		s.skipString('"', true)
	case strings.HasPrefix(rest, `'`):
		s.pos++
		s.skipString('\'', false)
	case strings.HasPrefix(rest, `[`):
		s.array(path, depth+1)
	case strings.HasPrefix(rest, `{`):
		s.inlineTable(path, depth+1)
	default:
		for s.pos < len(s.src) && !strings.ContainsRune(",]}#\n", rune(s.src[s.pos])) {
			s.pos++
		}
	}
}

func (s *keyScanner) array(path string, depth int) {
	s.pos++
	for i := 0; ; {
		s.skipBlank(true)
		switch s.peek() {
		case 0:
			return
		case ']':
			s.pos++
			return
		case ',':
			s.pos++
			continue
		}
		start := s.pos
		element := indexKey(path, i)
		s.record(element, s.line)
		s.value(element, depth)
		i++
		if s.pos == start {
			s.advance()
		}
	}
}

func (s *keyScanner) inlineTable(path string, depth int) {
	s.pos++
	for {
		s.skipBlank(true)
		switch s.peek() {
		case 0:
			return
		case '}':
			s.pos++
			return
		case ',':
			s.pos++
			continue
		}
		start := s.pos
		s.keyValue(path, depth)
		if s.pos == start {
			s.advance()
		}
	}
}

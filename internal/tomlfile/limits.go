package tomlfile

import "fmt"

// BurntSushi/toml spends memory on every key in proportion to the square of
// its path length: each level of a table header, a dotted key or an inline
// table turns the whole path into a string again, and keeps some of those
// strings in maps. A few kilobytes of "a.a.a.a...=1" or "a={a={a=...}}"
// make it allocate gigabytes. Once paths are short, what it spends grows
// with the size of the file: a few hundred bytes of memory per byte of
// input in the worst case. So every file is bounded twice before it is
// parsed: by its size, according to its kind, and by a scan that rejects
// paths nested deeper than MaxDepth.

// MaxDepth is how deep a value may be nested: the pieces of its table
// header, of its dotted key and of the keys of the inline tables it is in,
// plus one per array it is in. "[a.b]" then "c.d = [{e = 1}]" puts e at
// depth 6. The project's files go three or four deep at most.
const MaxDepth = 16

// Kind is a kind of file, with the largest size [Kind.Decode] accepts for it.
type Kind struct {
	Name    string // for messages: "job file"
	MaxSize int    // in bytes
}

var (
	// ConfigFile is a lab, device, device-type or client configuration
	// file. They are written by the lab's administrators and are a few
	// kilobytes long; 256 KiB leaves room for a hundred times that while
	// keeping the parser's worst case near 100 MB.
	ConfigFile = Kind{Name: "configuration file", MaxSize: 256 << 10}
	// JobFile is a job file. The daemon parses the ones anybody submits,
	// and real ones hold a few hundred bytes: at 64 KiB the parser's worst
	// case is a few tens of megabytes.
	JobFile = Kind{Name: "job file", MaxSize: 64 << 10}
)

// check returns the problem that keeps data, the contents of file, from
// being parsed as a file of kind k, if any.
func (k Kind) check(file string, data []byte) *Problem {
	if len(data) > k.MaxSize {
		return &Problem{File: file, Message: fmt.Sprintf("%d bytes is too big for a %s: at most %s", len(data), k.Name, sizeString(k.MaxSize))}
	}
	if line, ok := checkDepth(data); !ok {
		return &Problem{File: file, Line: line, Message: fmt.Sprintf("nested too deep: tables, dotted keys, inline tables and arrays go at most %d levels deep together", MaxDepth)}
	}
	return nil
}

func sizeString(n int) string {
	switch {
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// checkDepth reports whether every value in src is nested at most MaxDepth
// deep, and if not, the line where a value goes deeper. It reads the text
// the way the TOML grammar does (strings, comments, table headers, keys,
// values) but is no parser: on text that is not TOML it keeps going, and
// what it answers after the first syntax error does not matter, since the
// parser stops there. It runs in linear time and allocates nothing.
func checkDepth(src []byte) (line int, ok bool) {
	s := depthScanner{src: src, line: 1}
	ok = s.scan()
	return s.line, ok
}

// Where the depth scanner is in the grammar.
const (
	lineStart = iota // at the start of a top-level line
	inKey            // reading a possibly dotted key
	inValue          // reading a value, or after one
	lineRest         // after a table header: skip to the end of the line
)

type depthScanner struct {
	src   []byte
	pos   int
	line  int
	open  [MaxDepth + 1]openValue // the arrays and inline tables around pos
	nopen int
}

// openValue is an array or inline table being read.
type openValue struct {
	kind  byte // '[' or '{'
	depth int  // of the value it is
}

func (s *depthScanner) scan() bool {
	state := lineStart
	header := 0 // depth of the current table header
	base := 0   // depth of the table the key being read is in
	depth := 0  // depth of the key being read, or of the current value
	for s.pos < len(s.src) {
		c := s.src[s.pos]
		switch {
		case c == '\n':
			s.line++
			s.pos++
			if s.nopen == 0 {
				state = lineStart
			}
			continue
		case c == ' ' || c == '\t' || c == '\r':
			s.pos++
			continue
		case c == '#':
			s.skipComment()
			continue
		}
		switch state {
		case lineStart:
			if c == '[' {
				s.pos++
				if s.pos < len(s.src) && s.src[s.pos] == '[' {
					s.pos++
				}
				if header = s.headerDepth(); header > MaxDepth {
					return false
				}
				state = lineRest
				continue
			}
			state, base, depth = inKey, header, header+1
			if depth > MaxDepth {
				return false
			}
			s.skipKeyPiece()
		case inKey:
			switch c {
			case '.':
				s.pos++
				if depth++; depth > MaxDepth {
					return false
				}
			case '=':
				s.pos++
				state = inValue
			case '}':
				// An empty inline table, or one with a trailing comma.
				if !s.close('{', &depth) {
					s.pos++
				}
				state = inValue
			case ',':
				s.pos++ // a syntax error
			default:
				if depth == base { // no piece read yet in this table
					if depth++; depth > MaxDepth {
						return false
					}
				}
				s.skipKeyPiece()
			}
		case inValue:
			switch c {
			case '[':
				s.pos++
				if depth+1 > MaxDepth || !s.push('[', depth) {
					return false
				}
				depth++
			case '{':
				s.pos++
				if !s.push('{', depth) {
					return false
				}
				state, base = inKey, depth
			case ']':
				if !s.close('[', &depth) {
					s.pos++
				}
			case '}':
				if !s.close('{', &depth) {
					s.pos++
				}
			case ',':
				s.pos++
				if s.nopen > 0 {
					top := s.open[s.nopen-1]
					if top.kind == '{' {
						state, base, depth = inKey, top.depth, top.depth
					} else {
						depth = top.depth + 1
					}
				}
			case '"', '\'':
				s.skipString(true)
			default:
				s.pos++ // numbers, dates, booleans: dots here are not keys
			}
		case lineRest:
			if c == '"' || c == '\'' {
				s.skipString(true)
			} else {
				s.pos++
			}
		}
	}
	return true
}

// push opens an array or inline table, the value at depth.
func (s *depthScanner) push(kind byte, depth int) bool {
	if s.nopen == len(s.open) {
		return false
	}
	s.open[s.nopen] = openValue{kind, depth}
	s.nopen++
	return true
}

// close reads the closing bracket of the innermost open array or inline
// table if it is of kind, and sets depth to that value's depth.
func (s *depthScanner) close(kind byte, depth *int) bool {
	if s.nopen == 0 || s.open[s.nopen-1].kind != kind {
		return false
	}
	s.pos++
	s.nopen--
	*depth = s.open[s.nopen].depth
	return true
}

// headerDepth reads the rest of a table header after its opening brackets
// and returns the number of pieces in its key.
func (s *depthScanner) headerDepth() int {
	depth := 1
	for s.pos < len(s.src) {
		switch s.src[s.pos] {
		case '\n', ']':
			return depth
		case '.':
			depth++
			if depth > MaxDepth {
				return depth
			}
			s.pos++
		case '"', '\'':
			s.skipString(false)
		case '#':
			return depth // a syntax error
		default:
			s.pos++
		}
	}
	return depth
}

// skipKeyPiece skips a bare or quoted key, or one byte of something else.
func (s *depthScanner) skipKeyPiece() {
	switch s.src[s.pos] {
	case '"', '\'':
		s.skipString(false)
		return
	}
	start := s.pos
	for s.pos < len(s.src) && isBareKeyByte(s.src[s.pos]) {
		s.pos++
	}
	if s.pos == start {
		s.pos++
	}
}

func isBareKeyByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// skipComment skips a comment up to its line end.
func (s *depthScanner) skipComment() {
	for s.pos < len(s.src) && s.src[s.pos] != '\n' {
		s.pos++
	}
}

// skipString skips a string starting at pos: basic or literal, and, if
// multiline is set, multi-line ones too. A one-line string also ends at a
// line end (a syntax error), which is left to be read.
func (s *depthScanner) skipString(multiline bool) {
	quote := s.src[s.pos]
	escapes := quote == '"'
	if multiline && s.pos+2 < len(s.src) && s.src[s.pos+1] == quote && s.src[s.pos+2] == quote {
		s.pos += 3
		for s.pos < len(s.src) {
			c := s.src[s.pos]
			switch {
			case c == '\\' && escapes:
				s.pos++
				if s.pos < len(s.src) && s.src[s.pos] == '\n' {
					s.line++
				}
				s.pos++
			case c == quote && s.pos+2 < len(s.src) && s.src[s.pos+1] == quote && s.src[s.pos+2] == quote:
				// The delimiter, after up to two quotes of content.
				s.pos += 3
				for i := 0; i < 2 && s.pos < len(s.src) && s.src[s.pos] == quote; i++ {
					s.pos++
				}
				return
			default:
				if c == '\n' {
					s.line++
				}
				s.pos++
			}
		}
		return
	}
	s.pos++
	for s.pos < len(s.src) {
		c := s.src[s.pos]
		switch {
		case c == '\n':
			return
		case c == quote:
			s.pos++
			return
		case c == '\\' && escapes && s.pos+1 < len(s.src) && s.src[s.pos+1] != '\n':
			s.pos += 2
		default:
			s.pos++
		}
	}
}

// Package tomlfile decodes one TOML configuration file strictly and reports
// every problem in it as "FILE:LINE: key.path: message".
//
// The steps are always the same: the caller fills a struct with defaults,
// [Decode] parses the file and decodes it into the struct (unknown keys and
// wrong types become problems with their line), then the caller validates
// the result and records its own problems with [Document.Problemf], which
// finds the line of the key it names. [Document.Err] returns everything
// found as one [*Error].
//
// Only exported struct fields with a `toml:"name"` tag are decoded, and key
// names must match exactly (BurntSushi/toml on its own would also accept
// "Name" for "name"). Durations must be strings with a unit ("90s", "5m"):
// a bare integer would silently mean nanoseconds. A field of type [Table]
// keeps its TOML table for later, so that it can be decoded into a value that
// depends on other files (a device's [override] table of device-type keys).
//
// Before anything is parsed, a file is bounded by its size, according to
// its [Kind], and by how deep it nests ([MaxDepth]): the parser's memory
// grows with the square of nesting depth.
package tomlfile

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File    string
	Line    int    // 1-based; 0 when the problem has no place in the file
	Key     string // key path such as "deploy.sha256" or "test[1].name"; may be empty
	Message string
	Warning bool // worth fixing, but the file is still usable
}

// String formats the problem as "FILE:LINE: key: message", leaving out the
// parts that are unknown ("FILE: key: message" for a missing top-level key).
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	if p.Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Error is the list of problems found in one or more files, in file and
// line order. It is returned only when at least one problem is not a
// warning; the warnings travel with it so that nothing is lost.
type Error struct {
	Problems []Problem
}

// Error returns one problem per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Errors returns the problems that are not warnings.
func (e *Error) Errors() []Problem {
	return slices.DeleteFunc(slices.Clone(e.Problems), func(p Problem) bool { return p.Warning })
}

// Check returns problems as an [*Error] (sorted by file, line and key) if at
// least one of them is not a warning, and nil otherwise.
func Check(problems []Problem) error {
	if !slices.ContainsFunc(problems, func(p Problem) bool { return !p.Warning }) {
		return nil
	}
	sorted := slices.Clone(problems)
	slices.SortStableFunc(sorted, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Key, b.Key))
	})
	return &Error{Problems: sorted}
}

// Problems returns the problems that err carries: those of an [*Error], or
// a single problem in file for any other error.
func Problems(file string, err error) []Problem {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Problems
	}
	return []Problem{{File: file, Message: err.Error()}}
}

// NameRule says what [ValidName] accepts, for messages.
const NameRule = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64"

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether s may name a lab, device, device type, job,
// test step or tag. Such names end up in file names, URLs, JUnit reports
// and console markers, so they are kept plain.
func ValidName(s string) bool { return validName.MatchString(s) }

// Document is a parsed file being decoded and validated. It knows the line
// of every key, and collects the problems found.
type Document struct {
	file     string
	meta     toml.MetaData
	lines    map[string]int
	problems []Problem
	failed   map[string]bool // keys that already have a decoding problem
}

// Decode parses data, the contents of file, and decodes it into v, a
// pointer to a struct that already holds the defaults. It returns an error
// only when data is not TOML at all (a syntax error: one problem, with its
// line); unknown keys and wrong types are recorded in the document, and the
// values that decoded are set, so that validation can go on.
//
// Decode reads data as a [ConfigFile]; see [Kind.Decode].
func Decode(file string, data []byte, v any) (*Document, error) {
	return ConfigFile.Decode(file, data, v)
}

// Decode is [Decode] for a file of kind k: a file bigger than k allows, or
// nested deeper than [MaxDepth], is a problem of its own, found before
// anything is parsed.
func (k Kind) Decode(file string, data []byte, v any) (*Document, error) {
	if p := k.check(file, data); p != nil {
		return nil, &Error{Problems: []Problem{*p}}
	}
	var top map[string]toml.Primitive
	meta, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&top)
	if err != nil {
		return nil, &Error{Problems: []Problem{syntaxProblem(file, data, err)}}
	}
	d := &Document{
		file:   file,
		meta:   meta,
		lines:  keyLines(string(data)),
		failed: map[string]bool{},
	}
	d.decodeFields("", top, valueOf(v))
	return d, nil
}

func syntaxProblem(file string, data []byte, err error) Problem {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		// The line is counted from the offset: when the offending byte is a
		// newline, Position.Line already names the next line.
		line := pe.Position.Line
		if start := pe.Position.Start; start >= 0 && start <= len(data) {
			line = 1 + bytes.Count(data[:start], []byte("\n"))
		}
		return Problem{File: file, Line: line, Message: pe.Message}
	}
	return Problem{File: file, Message: strings.TrimPrefix(err.Error(), "toml: ")}
}

// TopLevelKeys returns the keys of the top-level table of a TOML document,
// or an error if it does not parse. It lets a caller tell kinds of files
// apart before choosing the struct to decode into. It bounds data as
// [Decode] does for a [ConfigFile], the largest kind.
func TopLevelKeys(data []byte) ([]string, error) {
	if p := ConfigFile.check("", data); p != nil {
		if p.Line > 0 {
			return nil, fmt.Errorf("line %d: %s", p.Line, p.Message)
		}
		return nil, errors.New(p.Message)
	}
	var top map[string]toml.Primitive
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&top); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(top))
	for k := range top {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// File returns the file name the document reports problems in.
func (d *Document) File() string { return d.file }

// Line returns the line where key (a path such as "deploy.sha256" or
// "test[1].name") is defined. For a key that is not in the file it returns
// the line of the nearest table that is, and 0 if there is none.
func (d *Document) Line(key string) int {
	for {
		if line, ok := d.lines[key]; ok {
			return line
		}
		if key == "" {
			return 0
		}
		key = parentKey(key)
	}
}

// Has reports whether key (a path such as "deploy.sha256") is in the file.
func (d *Document) Has(key string) bool {
	_, ok := d.lines[key]
	return ok
}

// Problemf records a problem with key at the key's line (see [Document.Line]).
// Nothing is recorded if key, or a table holding it, already failed to decode:
// a value of the wrong type should not also be reported as missing.
func (d *Document) Problemf(key, format string, args ...any) {
	for k := key; ; k = parentKey(k) {
		if d.failed[k] {
			return
		}
		if k == "" {
			break
		}
	}
	d.problems = append(d.problems, Problem{File: d.file, Line: d.Line(key), Key: key, Message: fmt.Sprintf(format, args...)})
}

// Warnf records a warning about key at the key's line.
func (d *Document) Warnf(key, format string, args ...any) {
	d.problems = append(d.problems, Problem{File: d.file, Line: d.Line(key), Key: key, Message: fmt.Sprintf(format, args...), Warning: true})
}

// decodeProblemf records a problem found while decoding key, and marks key
// as failed.
func (d *Document) decodeProblemf(key, format string, args ...any) {
	d.Problemf(key, format, args...)
	d.failed[key] = true
}

// Problems returns the problems and warnings recorded so far.
func (d *Document) Problems() []Problem { return slices.Clone(d.problems) }

// Err returns the recorded problems as an [*Error], or nil if there are
// none but warnings.
func (d *Document) Err() error { return Check(d.problems) }

// Table is a TOML table kept undecoded by [Decode], to be decoded later with
// [Document.DecodeTable] into a value chosen by the caller.
type Table struct {
	prim toml.Primitive
	key  string
	set  bool
}

// IsSet reports whether the table was in the file.
func (t Table) IsSet() bool { return t.set }

// Key returns the table's key path ("override").
func (t Table) Key() string { return t.key }

// DecodeTable decodes t into v (a pointer to a struct that holds the values
// to start from), with the same strictness as [Decode]: only the keys in the
// table change v, and problems are recorded under the table's key path.
func (d *Document) DecodeTable(t Table, v any) {
	if !t.set {
		return
	}
	d.decodeTable(t.key, t.prim, valueOf(v))
}

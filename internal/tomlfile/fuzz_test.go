package tomlfile

import (
	"bytes"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzDecode feeds arbitrary bytes to the decoder and the key scanner: they
// must never panic or loop, and every problem must point into the file.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		"name = \"x\"\ncount = 3\nwait = \"5s\"\ntags = [\"a\"]\ncolor = \"red\"\n",
		"[inner]\nshared = \"s\"\ndepth = 1\n[[step]]\nname = \"a\"\ncommands = [\"x\", 'y']\n",
		"[extra]\ncount = 1\ninner.depth = \"x\"\nbogus = { a = [1, {b = 2}] }\n",
		"a = \"\"\"\nb = 1\n\"\"\"\nc = '''x'''\n[[a.b]]\n[a.\"c.d\"]\n",
		"name = 5\nNAME = 1\n[step]\n",
		"x = [[[[[[[[[[1]]]]]]]]]]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		keyLines(string(data)) // also on text that does not parse
		lines := bytes.Count(data, []byte("\n")) + 1
		var v sample
		d, err := Decode("f.toml", data, &v)
		if err == nil {
			d.DecodeTable(v.Extra, &sample{})
			err = d.Err()
		}
		for _, p := range Problems("f.toml", err) {
			if p.Line < 0 || p.Line > lines {
				t.Errorf("problem %q: line %d outside the file (%d lines)", p, p.Line, lines)
			}
			if !strings.HasPrefix(p.String(), "f.toml") {
				t.Errorf("problem %q does not name the file", p)
			}
		}
	})
}

// FuzzCheckDepth checks the depth scanner against the parser: on text that
// parses, the scanner accepts it exactly when nothing in it is nested deeper
// than MaxDepth. Its seed corpus is under testdata/fuzz/FuzzCheckDepth.
func FuzzCheckDepth(f *testing.F) {
	for _, shape := range attackShapes {
		f.Add([]byte(attack(shape, 64)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, accepted := checkDepth(data)
		if len(data) > 4<<10 || !accepted && len(data) > 1<<10 {
			return // the parser would take too long on deep text
		}
		var top map[string]any
		if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&top); err != nil {
			return
		}
		if depth := depthOf(top, 0); accepted != (depth <= MaxDepth) {
			t.Errorf("%q is %d deep, and the depth scanner says ok=%v", data, depth, accepted)
		}
	})
}

// maxDepthOf returns how deep data, which must parse, is nested.
func maxDepthOf(t *testing.T, data []byte) int {
	t.Helper()
	var top map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&top); err != nil {
		t.Fatal(err)
	}
	return depthOf(top, 0)
}

// depthOf returns the depth of the deepest value in v, a value decoded by
// BurntSushi/toml at the given depth (see MaxDepth).
func depthOf(v any, depth int) int {
	deepest := depth
	switch v := v.(type) {
	case map[string]any: // a table: its keys are one level down
		for _, e := range v {
			deepest = max(deepest, depthOf(e, depth+1))
		}
	case []map[string]any: // an array of tables: each element is the array
		for _, e := range v {
			deepest = max(deepest, depthOf(e, depth))
		}
	case []any: // an array: its elements are one level down
		deepest = depth + 1
		for _, e := range v {
			deepest = max(deepest, depthOf(e, depth+1))
		}
	}
	return deepest
}

package tomlfile

import (
	"bytes"
	"strings"
	"testing"
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

package tomlfile

import (
	"maps"
	"testing"
)

func TestKeyLines(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want map[string]int
	}{
		{
			name: "tables and keys",
			src: `name = "x"   # comment
# a comment line

[deploy]
image = "a.img"
  sha256 = "00"
`,
			want: map[string]int{"name": 1, "deploy": 4, "deploy.image": 5, "deploy.sha256": 6},
		},
		{
			name: "arrays of tables get indices",
			src: `[[test]]
name = "a"
[[test]]
name = "b"

commands = ["x"]
`,
			want: map[string]int{"test": 1, "test[0]": 1, "test[0].name": 2, "test[1]": 3, "test[1].name": 4, "test[1].commands": 6, "test[1].commands[0]": 6},
		},
		{
			name: "nested arrays of tables restart per parent",
			src: `[[a]]
[[a.b]]
[[a]]
[[a.b]]
x = 1
[a.c]
y = 2
`,
			want: map[string]int{"a": 1, "a[0]": 1, "a[0].b": 2, "a[0].b[0]": 2, "a[1]": 3, "a[1].b": 4, "a[1].b[0]": 4, "a[1].b[0].x": 5, "a[1].c": 6, "a[1].c.y": 7},
		},
		{
			name: "dotted and quoted keys",
			src: `[override]
console.test_shell_serial_delay_ms = 100
"odd.key" . 'lit' = 1
`,
			want: map[string]int{"override": 1, "override.console": 2, "override.console.test_shell_serial_delay_ms": 2, `override."odd.key"`: 3, `override."odd.key".lit`: 3},
		},
		{
			name: "multi-line strings and arrays do not confuse lines",
			src: `a = """
b = 1
\""" still inside
"""
c = [
  "x", # comment with ] and =
  'y',
]
d = '''
e = 2'''
f = { g = 1, h = [1, 2] }
i = 3
`,
			want: map[string]int{"a": 1, "c": 5, "c[0]": 6, "c[1]": 7, "d": 9, "f": 11, "f.g": 11, "f.h": 11, "f.h[0]": 11, "f.h[1]": 11, "i": 12},
		},
		{
			name: "inline tables in arrays",
			src: `[server]
tokens = [
  { name = "ci", token_file = "ci.token" },
  { name = "x", bogus = 1 },
]
`,
			want: map[string]int{"server": 1, "server.tokens": 2, "server.tokens[0]": 3, "server.tokens[0].name": 3, "server.tokens[0].token_file": 3, "server.tokens[1]": 4, "server.tokens[1].name": 4, "server.tokens[1].bogus": 4},
		},
		{
			name: "CRLF line ends",
			src:  "a = 1\r\n[t]\r\nb = 2\r\n",
			want: map[string]int{"a": 1, "t": 2, "t.b": 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := keyLines(tt.src)
			if !maps.Equal(got, tt.want) {
				t.Errorf("keyLines() =\n%v\nwant\n%v", got, tt.want)
			}
		})
	}
}

func TestParentKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"name", ""},
		{"deploy.sha256", "deploy"},
		{"test[1].name", "test[1]"},
		{"test[1]", "test"},
		{`override."odd.key"`, "override"},
		{`"a.b".c`, `"a.b"`},
		{`a."x\"y"`, "a"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := parentKey(tt.in); got != tt.want {
			t.Errorf("parentKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

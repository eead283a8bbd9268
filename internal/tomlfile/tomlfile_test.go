package tomlfile

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// color is a TextUnmarshaler, like the enums and addresses of real schemas.
type color string

func (c *color) UnmarshalText(b []byte) error {
	switch s := string(b); s {
	case "red", "blue":
		*c = color(s)
		return nil
	default:
		return fmt.Errorf("%q is not a color: want red or blue", s)
	}
}

type sample struct {
	Name    string        `toml:"name"`
	Count   int           `toml:"count"`
	Enabled bool          `toml:"enabled"`
	Wait    time.Duration `toml:"wait"`
	Tags    []string      `toml:"tags"`
	Color   color         `toml:"color"`
	Inner   inner         `toml:"inner"`
	Steps   []step        `toml:"step"`
	Extra   Table         `toml:"extra"`
	Derived string        // no tag: never decoded
}

type inner struct {
	embedded
	Depth int `toml:"depth"`
}

type embedded struct {
	Shared string `toml:"shared"`
}

type step struct {
	Name     string   `toml:"name"`
	Commands []string `toml:"commands"`
}

func defaults() sample {
	return sample{Name: "default", Count: 7, Wait: time.Minute, Tags: []string{"a", "b"}, Color: "red"}
}

// decode decodes src as file "f.toml" and returns the struct, the document
// and the problems as strings without the file name.
func decode(t *testing.T, src string) (sample, *Document, []string) {
	t.Helper()
	v := defaults()
	d, err := Decode("f.toml", []byte(src), &v)
	if err != nil {
		return v, nil, problemStrings(err)
	}
	return v, d, problemStrings(d.Err())
}

func problemStrings(err error) []string {
	var out []string
	for _, p := range Problems("f.toml", err) {
		out = append(out, strings.TrimPrefix(p.String(), "f.toml"))
	}
	return out
}

func TestDecodeProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "valid",
			src:  "name = \"x\"\ncount = 3\n[inner]\nshared = \"s\"\n",
		},
		{
			name: "syntax error has its line",
			src:  "name = \"x\"\ncount = = 3\n",
			want: []string{":2: expected value but found '=' instead"},
		},
		{
			name: "syntax error at a line end names that line",
			src:  "name = \"x\"\n[inner\n",
			want: []string{`:2: expected '.' or ']' to end table name, but got '\n' instead`},
		},
		{
			name: "unknown key with its line and a suggestion",
			src:  "name = \"x\"\n\n[inner]\ndepht = 3\n",
			want: []string{`:4: inner.depht: unknown key (did you mean "depth"?)`},
		},
		{
			name: "unknown table reported once",
			src:  "[bogus]\na = 1\nb = 2\n",
			want: []string{":1: bogus: unknown key"},
		},
		{
			name: "key names are case-sensitive",
			src:  "Name = \"x\"\n",
			want: []string{`:1: Name: unknown key (did you mean "name"?)`},
		},
		{
			name: "untagged fields are not keys",
			src:  "Derived = \"x\"\n",
			want: []string{":1: Derived: unknown key"},
		},
		{
			name: "unknown key in an array of tables names its element",
			src:  "[[step]]\nname = \"a\"\n[[step]]\nname = \"b\"\ncommand = [\"x\"]\n",
			want: []string{`:5: step[1].command: unknown key (did you mean "commands"?)`},
		},
		{
			name: "wrong types, all of them",
			src:  "name = 5\ncount = \"three\"\nenabled = \"yes\"\ntags = [1, 2]\n[inner]\ndepth = 1.5\n",
			want: []string{
				":1: name: must be a string, not an integer",
				":2: count: must be an integer, not a string",
				":3: enabled: must be a boolean (true or false), not a string",
				":4: tags: must be an array of strings, not an array of integers",
				":6: inner.depth: must be an integer, not a float",
			},
		},
		{
			name: "table where a value belongs and the reverse",
			src:  "inner = 3\n[name]\nx = 1\n",
			want: []string{":1: inner: must be a table, not an integer", ":2: name: must be a string, not a table"},
		},
		{
			name: "array of tables must be one",
			src:  "step = \"x\"\n",
			want: []string{":1: step: must be an array of tables, not a string"},
		},
		{
			name: "bad duration",
			src:  "\nwait = \"30 parsecs\"\n",
			want: []string{`:2: wait: invalid duration "30 parsecs": want a number with a unit, such as "90s", "5m" or "1h30m"`},
		},
		{
			name: "integer duration is refused",
			src:  "wait = 30\n",
			want: []string{`:1: wait: must be a duration such as "90s" or "5m", not an integer`},
		},
		{
			name: "TextUnmarshaler error",
			src:  "color = \"green\"\n",
			want: []string{`:1: color: "green" is not a color: want red or blue`},
		},
		{
			name: "duplicate key is a syntax error",
			src:  "name = \"a\"\nname = \"b\"\n",
			want: []string{":2: Key 'name' has already been defined."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, got := decode(t, tt.src)
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestDecodeKeepsDefaultsAndValues(t *testing.T) {
	v, _, problems := decode(t, `
name = "x"
count = "bad"
[inner]
shared = "s"
depth = 2
[[step]]
name = "a"
commands = ["one", "two"]
`)
	if len(problems) != 1 {
		t.Fatalf("problems = %q, want only the one for count", problems)
	}
	if v.Name != "x" || v.Count != 7 || v.Wait != time.Minute || v.Color != "red" {
		t.Errorf("got %+v: want name decoded, count/wait/color left at their defaults", v)
	}
	if v.Inner.Shared != "s" || v.Inner.Depth != 2 {
		t.Errorf("inner = %+v, want the embedded field promoted", v.Inner)
	}
	if len(v.Steps) != 1 || v.Steps[0].Name != "a" || !slices.Equal(v.Steps[0].Commands, []string{"one", "two"}) {
		t.Errorf("steps = %+v", v.Steps)
	}
}

func TestDecodeDoesNotShareSlicesWithDefaults(t *testing.T) {
	base := defaults()
	v := base
	if _, err := Decode("f.toml", []byte(`tags = ["x", "y"]`), &v); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(base.Tags, []string{"a", "b"}) {
		t.Errorf("defaults changed to %q by decoding a copy", base.Tags)
	}
	if !slices.Equal(v.Tags, []string{"x", "y"}) {
		t.Errorf("tags = %q", v.Tags)
	}
}

func TestDecodeTable(t *testing.T) {
	src := `name = "x"
[extra]
count = 9
inner.depth = 4
colour = "blue"
`
	var v sample
	d, err := Decode("f.toml", []byte(src), &v)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Extra.IsSet() || v.Extra.Key() != "extra" {
		t.Fatalf("extra = %+v, want a set table at key extra", v.Extra)
	}
	if err := d.Err(); err != nil {
		t.Fatalf("keys inside a Table are checked only when it is decoded, got %v", err)
	}
	target := defaults()
	target.Inner.Shared = "kept"
	d.DecodeTable(v.Extra, &target)
	if target.Count != 9 || target.Inner.Depth != 4 || target.Inner.Shared != "kept" || target.Name != "default" {
		t.Errorf("target = %+v: want count and inner.depth changed, everything else kept", target)
	}
	got := problemStrings(d.Err())
	want := []string{`:5: extra.colour: unknown key (did you mean "color"?)`}
	if !slices.Equal(got, want) {
		t.Errorf("problems = %q, want %q", got, want)
	}
}

func TestProblemf(t *testing.T) {
	_, d, _ := decode(t, `name = 5

[[step]]
name = "a"

[[step]]
commands = []
`)
	d.Problemf("step[1].name", "required")
	d.Problemf("step[1].commands", "at least one command")
	d.Problemf("name", "required")          // name failed to decode: not reported twice
	d.Problemf("count", "must be positive") // not in the file, no table: no line
	d.Warnf("step[0].name", "short name")
	got := problemStrings(d.Err())
	want := []string{
		": count: must be positive",
		":1: name: must be a string, not an integer",
		":4: step[0].name: warning: short name",
		":6: step[1].name: required",
		":7: step[1].commands: at least one command",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestErrorOnlyWithRealProblems(t *testing.T) {
	_, d, _ := decode(t, `name = "x"`)
	d.Warnf("name", "just a warning")
	if err := d.Err(); err != nil {
		t.Errorf("Err() = %v, want nil when there are only warnings", err)
	}
	if len(d.Problems()) != 1 {
		t.Errorf("Problems() = %v, want the warning", d.Problems())
	}
	d.Problemf("name", "bad")
	var e *Error
	if err := d.Err(); !errors.As(err, &e) || len(e.Problems) != 2 || len(e.Errors()) != 1 {
		t.Errorf("Err() = %#v, want an *Error with the warning and the problem", err)
	}
}

func TestTopLevelKeys(t *testing.T) {
	keys, err := TopLevelKeys([]byte("b = 1\n[a]\nx = 1\n[[c]]\n"))
	if err != nil || !slices.Equal(keys, []string{"a", "b", "c"}) {
		t.Errorf("TopLevelKeys() = %q, %v", keys, err)
	}
	if _, err := TopLevelKeys([]byte("= 1")); err == nil {
		t.Error("TopLevelKeys(invalid) returned no error")
	}
}

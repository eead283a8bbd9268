package tomlfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// attack returns about size bytes of TOML of the given shape, nested as
// deep as the size allows. At 16 KiB, those that nest keys (headers, dotted
// keys, inline tables) make BurntSushi/toml allocate gigabytes; deep arrays
// alone cost it little, but are bounded all the same.
func attack(shape string, size int) string {
	var b strings.Builder
	switch shape {
	case "inline tables": // x={a={a={...}}}
		n := size / 3
		return "x=" + strings.Repeat("{a=", n) + "1" + strings.Repeat("}", n) + "\n"
	case "arrays": // x=[[[...]]]
		n := size / 2
		return "x=" + strings.Repeat("[", n) + "1" + strings.Repeat("]", n) + "\n"
	case "dotted key": // a.a.a...=1
		return strings.Repeat("a.", size/2) + "a=1\n"
	case "table header": // [a.a.a...]
		return "[" + strings.Repeat("a.", size/2) + "a]\nk=1\n"
	case "array table header": // [[a.a.a...]]
		return "[[" + strings.Repeat("a.", size/2) + "a]]\nk=1\n"
	case "many headers": // [a], [a.a], [a.a.a], ...
		for n := 1; b.Len() < size; n++ {
			b.WriteString("[" + strings.Repeat("a.", n) + "a]\n")
		}
		return b.String()
	case "dotted key in inline table": // x={a.a.a...=1}
		return "x={" + strings.Repeat("a.", size/2) + "a=1}\n"
	case "inline tables in arrays": // x=[{a=[{a=...}]}]
		n := size / 6
		return "x=" + strings.Repeat("[{a=", n) + "1" + strings.Repeat("}]", n) + "\n"
	case "all together": // a header, dotted keys and inline tables
		b.WriteString("[" + strings.Repeat("h.", 8) + "h]\n")
		for b.Len() < size {
			b.WriteString(strings.Repeat("d.", 8) + "d={" + strings.Repeat("i.", 8) + "i={")
		}
		return b.String() + "z=1\n"
	case "quoted keys": // "a"."a"."a"...=1
		return strings.Repeat(`"a".`, size/4) + "a=1\n"
	case "multi-line": // arrays split over lines, with comments
		n := size / 8
		return "x=" + strings.Repeat("[ # [\n", n) + "1" + strings.Repeat("]\n", n)
	}
	panic("unknown shape " + shape)
}

var attackShapes = []string{
	"inline tables", "arrays", "dotted key", "table header", "array table header",
	"many headers", "dotted key in inline table", "inline tables in arrays",
	"all together", "quoted keys", "multi-line",
}

// allocated returns the bytes f allocates: an upper bound on how much the
// heap grows while it runs.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestDeepNestingIsRejectedCheaply(t *testing.T) {
	for _, shape := range attackShapes {
		t.Run(shape, func(t *testing.T) {
			src := []byte(attack(shape, 16<<10))
			var err error
			bytes := allocated(func() {
				var v struct{}
				_, err = JobFile.Decode("job.toml", src, &v)
			})
			if bytes > 16<<20 {
				t.Errorf("decoding %d bytes allocated %d MiB", len(src), bytes>>20)
			}
			problems := Problems("job.toml", err)
			if len(problems) != 1 || !strings.Contains(problems[0].Message, "nested too deep") || problems[0].Line < 1 {
				t.Fatalf("got %v, want one problem: nested too deep, with its line", err)
			}
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("job.toml:%d: nested too deep", problems[0].Line)) {
				t.Errorf("error %q does not start with the file, the line and the problem", err)
			}
		})
	}
}

func TestDepthLimit(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("a.", n-1) + "a" }
	for _, tc := range []struct {
		name  string
		src   func(depth int) string
		line0 int // lines before the one that goes too deep
	}{
		{"dotted key", func(n int) string { return deep(n) + " = 1\n" }, 0},
		{"table header", func(n int) string { return "x = 1\n[" + deep(n) + "]\n" }, 1},
		{"array table header", func(n int) string { return "[[" + deep(n) + "]]\n" }, 0},
		{"key under a header", func(n int) string { return "[" + deep(n/2) + "]\n" + deep(n-n/2) + " = 1\n" }, 1},
		{"inline tables", func(n int) string {
			return "x = " + strings.Repeat("{ a = ", n-1) + "1" + strings.Repeat(" }", n-1) + "\n"
		}, 0},
		{"arrays", func(n int) string {
			return "x = " + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + "\n"
		}, 0},
		{"second element", func(n int) string {
			return "x = [1, " + strings.Repeat("[", n-2) + strings.Repeat("]", n-2) + "]\n"
		}, 0},
		{"second key of an inline table", func(n int) string {
			return "x = { b = 1, " + deep(n-1) + " = 1 }\n"
		}, 0},
		{"array split over lines", func(n int) string {
			return "x = [\n" + strings.Repeat("[\n", n-2) + strings.Repeat("]\n", n-2) + "]\n"
		}, MaxDepth - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v struct{}
			src := tc.src(MaxDepth)
			if line, ok := checkDepth([]byte(src)); !ok {
				t.Errorf("%q: depth %d rejected at line %d", src, MaxDepth, line)
			}
			if _, err := TopLevelKeys([]byte(src)); err != nil {
				t.Errorf("%q: depth %d does not parse: %v", src, MaxDepth, err)
			}
			src = tc.src(MaxDepth + 1)
			_, err := Decode("f.toml", []byte(src), &v)
			want := fmt.Sprintf("f.toml:%d: nested too deep", tc.line0+1)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("%q: got %v, want %s...", src, err, want)
			}
		})
	}
}

func TestStringsAndCommentsDoNotNest(t *testing.T) {
	deep := strings.Repeat("[{a.", 40)
	for _, src := range []string{
		`x = "` + deep + `"`,
		`x = "\"` + deep + `"`,
		`x = '` + deep + `\'`,
		`x = """` + deep + "\n" + deep + `"""`,
		`x = """` + deep + `\"""` + deep + `"""`,
		`x = """a""""` + "\n" + `y = "` + deep + `"`,
		`x = '''` + deep + "\n" + deep + `'''''`,
		"# " + deep + "\nx = 1 # " + deep,
		`"` + deep + `" = 1`,
		`'` + deep + `' = 1`,
		`["` + deep + `".'` + deep + `']`,
		"x = [ # " + deep + "\n  1, # " + deep + "\n]",
		"x = [1.5, 2.25, 1e3, 1979-05-27T07:32:00.999999Z, 07:32:00.5, " + strings.Repeat("3.5, ", 40) + "]",
		"x = { " + strings.Repeat("a = 1.5, b = '.', ", 1) + strings.Repeat("c.", MaxDepth-2) + "c = 1.5 }",
	} {
		if line, ok := checkDepth([]byte(src)); !ok {
			t.Errorf("%q: rejected at line %d", src, line)
		}
		if _, err := TopLevelKeys([]byte(src)); err != nil {
			t.Errorf("%q does not parse: %v", src, err)
		}
	}
}

func TestSizeLimit(t *testing.T) {
	pad := func(n int) []byte { return []byte("x = 1\n#" + strings.Repeat("-", n-len("x = 1\n#"))) }
	var v struct {
		X int `toml:"x"`
	}
	if _, err := JobFile.Decode("job.toml", pad(JobFile.MaxSize), &v); err != nil {
		t.Errorf("a job file of exactly %d bytes: %v", JobFile.MaxSize, err)
	}
	_, err := JobFile.Decode("job.toml", pad(JobFile.MaxSize+1), &v)
	if want := "job.toml: 65537 bytes is too big for a job file: at most 64 KiB"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	_, err = Decode("lab.toml", pad(ConfigFile.MaxSize+1), &v)
	if want := "lab.toml: 262145 bytes is too big for a configuration file: at most 256 KiB"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if _, err := TopLevelKeys(pad(ConfigFile.MaxSize + 1)); err == nil || !strings.Contains(err.Error(), "too big") {
		t.Errorf("TopLevelKeys of a file too big: got %v", err)
	}
}

// TestProjectFilesPass checks that the project's own TOML files, the
// examples people start from, are well inside the limits.
func TestProjectFilesPass(t *testing.T) {
	root := filepath.Join("..", "..")
	n := 0
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() && e.Name() == ".git" {
			return err
		}
		if e.IsDir() || !strings.HasSuffix(path, ".toml") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		if p := JobFile.check(path, data); p != nil {
			t.Error(p)
		}
		if line, ok := checkDepth(data); !ok || maxDepthOf(t, data) > MaxDepth/4 {
			t.Errorf("%s:%d: nested deeper than a quarter of the limit", path, line)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("found only %d TOML files under %s", n, root)
	}
}

package tomlfile

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The decoder walks the destination struct itself and lets BurntSushi/toml
// decode only the leaves (strings, numbers, arrays of them, TextUnmarshalers).
// Walking tables ourselves is what makes key matching exact, reports every
// wrong type instead of only the first, finds unknown keys with their path,
// and never writes into a slice shared with the defaults.

var (
	tableType           = reflect.TypeFor[Table]()
	durationType        = reflect.TypeFor[time.Duration]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func valueOf(v any) reflect.Value {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("tomlfile: decode needs a non-nil pointer to a struct, not %T", v))
	}
	return rv.Elem()
}

// isTable reports whether values of type t are decoded from a TOML table by
// walking their fields.
func isTable(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != tableType && !reflect.PointerTo(t).Implements(textUnmarshalerType)
}

// decodeTable decodes the TOML table prim, at key path, into the struct rv.
func (d *Document) decodeTable(path string, prim toml.Primitive, rv reflect.Value) {
	// Decoding a non-table into a map is not an error in BurntSushi/toml
	// (it leaves the map empty), so look at the value first.
	var raw any
	var table map[string]toml.Primitive
	if err := d.meta.PrimitiveDecode(prim, &raw); err != nil {
		d.decodeProblemf(path, "must be a table: %v", err)
		return
	}
	if _, ok := raw.(map[string]any); !ok {
		d.decodeProblemf(path, "must be a table, not %s", describeValue(raw))
		return
	}
	if err := d.meta.PrimitiveDecode(prim, &table); err != nil {
		d.decodeProblemf(path, "must be a table: %v", err)
		return
	}
	d.decodeFields(path, table, rv)
}

func (d *Document) decodeFields(path string, table map[string]toml.Primitive, rv reflect.Value) {
	fields := fieldsOf(rv.Type())
	keys := make([]string, 0, len(table))
	for key := range table {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		keyPath := joinKey(path, key)
		index, ok := fields[key]
		if !ok {
			d.decodeProblemf(keyPath, "unknown key%s", suggest(key, fields))
			continue
		}
		d.decodeValue(keyPath, table[key], rv.FieldByIndex(index))
	}
}

func (d *Document) decodeValue(path string, prim toml.Primitive, rv reflect.Value) {
	t := rv.Type()
	switch {
	case t == tableType:
		rv.Set(reflect.ValueOf(Table{prim: prim, key: path, set: true}))
	case isTable(t):
		d.decodeTable(path, prim, rv)
	case t.Kind() == reflect.Slice && isTable(t.Elem()):
		var items []toml.Primitive
		if err := d.meta.PrimitiveDecode(prim, &items); err != nil {
			d.decodeProblemf(path, "must be an array of tables, not %s", d.describe(prim))
			return
		}
		elems := reflect.MakeSlice(t, len(items), len(items))
		for i, item := range items {
			d.decodeTable(indexKey(path, i), item, elems.Index(i))
		}
		rv.Set(elems)
	case t == durationType:
		var s string
		if err := d.meta.PrimitiveDecode(prim, &s); err != nil {
			d.decodeProblemf(path, `must be a duration such as "90s" or "5m", not %s`, d.describe(prim))
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.decodeProblemf(path, `invalid duration %q: want a number with a unit, such as "90s", "5m" or "1h30m"`, s)
			return
		}
		rv.SetInt(int64(dur))
	default:
		// A fresh value, so that a decoded array never shares its backing
		// array with the defaults or with the value it overrides.
		fresh := reflect.New(t)
		if err := d.meta.PrimitiveDecode(prim, fresh.Interface()); err != nil {
			d.decodeProblemf(path, "%s", d.leafMessage(err, t, prim))
			return
		}
		rv.Set(fresh.Elem())
	}
}

// tomlErrorPrefix is what BurntSushi/toml puts before its messages.
var tomlErrorPrefix = regexp.MustCompile(`^toml: (line \d+ )?(\(last key ".*?"\): )?`)

// leafMessage turns an error from decoding a leaf value of Go type t into
// the message of a problem.
func (d *Document) leafMessage(err error, t reflect.Type, prim toml.Primitive) string {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return pe.Message // from an UnmarshalText, or a number out of range
	}
	msg := tomlErrorPrefix.ReplaceAllString(err.Error(), "")
	if strings.HasPrefix(msg, "incompatible types") || strings.HasPrefix(msg, "type mismatch") {
		return fmt.Sprintf("must be %s, not %s", describeType(t), d.describe(prim))
	}
	return msg
}

// describeType says what TOML value a Go type expects, for messages.
func describeType(t reflect.Type) string {
	if reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array of " + plural(describeType(t.Elem()))
	case reflect.Map:
		return "a table"
	}
	return t.String()
}

// describe says what TOML value prim holds, for messages.
func (d *Document) describe(prim toml.Primitive) string {
	var v any
	if err := d.meta.PrimitiveDecode(prim, &v); err != nil {
		return "a value of another type"
	}
	return describeValue(v)
}

func describeValue(v any) string {
	switch v := v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		kinds := map[string]bool{}
		for _, e := range v {
			kinds[describeValue(e)] = true
		}
		if len(kinds) == 1 {
			for k := range kinds {
				return "an array of " + plural(k)
			}
		}
		if len(kinds) == 0 {
			return "an empty array"
		}
		return "an array of mixed types"
	}
	return fmt.Sprintf("a %T", v)
}

// plural turns "a string" into "strings", "an integer" into "integers".
func plural(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "an "), "a ")
	if before, after, ok := strings.Cut(s, " "); ok {
		return before + "s " + after // "boolean (true or false)" -> "booleans (...)"
	}
	return s + "s"
}

// fieldsOf maps TOML key names to the field index paths of struct type t,
// promoting the fields of embedded structs that have no tag.
func fieldsOf(t reflect.Type) map[string][]int {
	fields := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		switch {
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			for k, index := range fieldsOf(f.Type) {
				fields[k] = append([]int{i}, index...)
			}
		case f.IsExported() && name != "" && name != "-":
			fields[name] = []int{i}
		}
	}
	return fields
}

// suggest returns ` (did you mean "x"?)` for the known key closest to key,
// or "" if none is close: at most half of key's letters differ.
func suggest(key string, fields map[string][]int) string {
	best, bestDistance := "", max(1, len(key)/2)+1
	for name := range fields {
		if dist := editDistance(strings.ToLower(key), name); dist < bestDistance || dist == bestDistance && name < best {
			best, bestDistance = name, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

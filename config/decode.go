package config

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

var durationType = reflect.TypeFor[time.Duration]()

// decode copies the raw settings into out (a pointer to a struct), strictly:
// an unknown key or a value of the wrong type is a problem naming its path.
// Strings are accepted for numbers, booleans and durations because
// environment overrides always arrive as strings.
func decode(raw map[string]any, out any) []problem {
	var d decoder
	d.value("", raw, reflect.ValueOf(out).Elem())
	return d.problems
}

type decoder struct{ problems []problem }

func (d *decoder) fail(path, format string, args ...any) {
	d.problems = append(d.problems, problem{path, fmt.Sprintf(format, args...)})
}

func (d *decoder) value(path string, in any, out reflect.Value) {
	if in == nil {
		return // an empty YAML value leaves the default
	}
	if out.Type() == durationType {
		d.duration(path, in, out)
		return
	}
	switch out.Kind() {
	case reflect.Struct:
		d.structure(path, in, out)
	case reflect.Map:
		d.mapping(path, in, out)
	case reflect.Slice:
		d.list(path, in, out)
	case reflect.String:
		switch v := in.(type) {
		case string:
			out.SetString(v)
		case int, int64, float64, bool:
			d.fail(path, "expected a string, got %v (quote it)", v)
		default:
			d.fail(path, "expected a string, got %s", describe(in))
		}
	case reflect.Bool:
		switch v := in.(type) {
		case bool:
			out.SetBool(v)
		case string:
			b, err := strconv.ParseBool(v)
			if err != nil {
				d.fail(path, "expected true or false, got %q", v)
				return
			}
			out.SetBool(b)
		default:
			d.fail(path, "expected true or false, got %s", describe(in))
		}
	case reflect.Int, reflect.Int64:
		n, ok := integer(in)
		if !ok {
			d.fail(path, "expected an integer, got %s", describe(in))
			return
		}
		out.SetInt(n)
	default:
		panic("config: unsupported field type " + out.Type().String())
	}
}

func (d *decoder) structure(path string, in any, out reflect.Value) {
	m, ok := in.(map[string]any)
	if !ok {
		d.fail(path, "expected a mapping of keys, got %s", describe(in))
		return
	}
	fields := map[string]int{}
	var names []string
	for i := range out.NumField() {
		tag := out.Type().Field(i).Tag.Get("mapstructure")
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = i
		names = append(names, tag)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		i, ok := fields[k]
		if !ok {
			d.fail(join(path, k), "unknown key (expected one of: %s)", strings.Join(names, ", "))
			continue
		}
		d.value(join(path, k), m[k], out.Field(i))
	}
}

func (d *decoder) mapping(path string, in any, out reflect.Value) {
	m, ok := in.(map[string]any)
	if !ok {
		d.fail(path, "expected a mapping, got %s", describe(in))
		return
	}
	if out.IsNil() {
		out.Set(reflect.MakeMap(out.Type()))
	}
	for k, v := range m {
		elem := reflect.New(out.Type().Elem()).Elem()
		d.value(join(path, k), v, elem)
		out.SetMapIndex(reflect.ValueOf(k), elem)
	}
}

func (d *decoder) list(path string, in any, out reflect.Value) {
	items, ok := in.([]any)
	if !ok {
		if s, isString := in.([]string); isString {
			for _, v := range s {
				items = append(items, v)
			}
		} else if s, isString := in.(string); isString && fromEnv(path) {
			// An environment variable can only be text: a list is
			// written comma-separated there.
			for _, v := range strings.Split(s, ",") {
				if v = strings.TrimSpace(v); v != "" {
					items = append(items, v)
				}
			}
		} else {
			d.fail(path, "expected a list, got %s", describe(in))
			return
		}
	}
	list := reflect.MakeSlice(out.Type(), len(items), len(items))
	for i, item := range items {
		d.value(fmt.Sprintf("%s[%d]", path, i), item, list.Index(i))
	}
	out.Set(list)
}

func (d *decoder) duration(path string, in any, out reflect.Value) {
	s, ok := in.(string)
	if !ok {
		d.fail(path, "expected a duration such as 30s or 5m, got %s", describe(in))
		return
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.fail(path, "expected a duration such as 30s or 5m, got %q", s)
		return
	}
	out.SetInt(int64(dur))
}

func fromEnv(path string) bool {
	_, ok := envVar(path)
	return ok
}

func integer(in any) (int64, bool) {
	switch v := in.(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case uint64:
		if v > math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			return 0, false
		}
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		return n, err == nil
	}
	return 0, false
}

func describe(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return fmt.Sprintf("string %q", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case int, int64, uint64, float64:
		return fmt.Sprintf("number %v", v)
	}
	return fmt.Sprintf("%T", v)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

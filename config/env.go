package config

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/spf13/viper"
)

// Environment overrides. Viper reads COUNTERSIGN_<KEY> only for keys it
// already knows (from the file or a default), and ignores every other
// variable. A typo'd name (COUNTERSIGN_APPROVAL_TIMOUT) was therefore
// ignored in silence, the setting it meant left at its default. Here the
// overrides of every key this configuration can have are bound, and each
// COUNTERSIGN_ variable that still names none is reported.
//
// Reported, not refused: the environment is shared with everything else
// the shell or the unit runs (the deploy backend itself exports
// COUNTERSIGN_DATA_DIR to its script, and a script that runs a countersign
// command would then be refused), and a variable meant for a newer
// version's setting must not stop an older binary during a downgrade. The
// harm is the silence; the warning ends it, naming the variable and the
// setting it most likely meant, in config validate's report and at serve's
// start.

// envKeys returns the configuration keys an environment variable can
// override: every key of the Config structs outside lists, with the keys of
// each tool the file names. tools are the tool names the file has.
func envKeys(tools []string) []string {
	var keys []string
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			key := join(path, tag)
			switch ft := f.Type; {
			case ft == durationType:
				keys = append(keys, key)
			case ft.Kind() == reflect.Struct:
				walk(ft, key)
			case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
				for _, name := range tools {
					walk(ft.Elem(), key+"."+name)
				}
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.String:
				// lists of items: an item cannot be overridden
			default:
				keys = append(keys, key)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return keys
}

// envName is the variable that overrides key.
func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// bindEnv makes v read the override of every key in keys whose variable
// is set, those the file and the defaults leave out included, and returns
// a warning for each set COUNTERSIGN_ variable that overrides nothing.
func bindEnv(v *viper.Viper, keys []string) []string {
	// The token PIN's default variable is read by the server, not a setting.
	byName := map[string]string{EnvPrefix + "_CONFIG": "", DefaultPINEnv: ""}
	for _, k := range keys {
		byName[envName(k)] = k
	}
	var warnings []string
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix+"_") || value == "" { // viper ignores empty variables
			continue
		}
		key, ok := byName[name]
		if !ok {
			warnings = append(warnings, unknownEnv(name, byName))
			continue
		}
		if key != "" {
			v.BindEnv(key) // the name is envName(key), as AutomaticEnv would look it up
		}
	}
	slices.Sort(warnings)
	return warnings
}

func unknownEnv(name string, known map[string]string) string {
	msg := fmt.Sprintf("environment variable %s is not a setting, so it is ignored", name)
	best, bestDist := "", 0
	for k := range known {
		d := editDistance(name, k)
		if best == "" || d < bestDist || d == bestDist && k < best {
			best, bestDist = k, d
		}
	}
	// A few edits, and fewer than a third of the name after the prefix:
	// a typo, not another program's variable.
	if best != "" && bestDist <= 3 && bestDist*3 < len(name)-len(EnvPrefix)-1 {
		msg += "; did you mean " + best + "?"
	}
	return msg
}

// editDistance is the Levenshtein distance between a and b (ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

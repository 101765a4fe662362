package guard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
)

// inexact names the first number in raw JSON arguments that a float64 —
// the form every step after the transport works with — cannot hold
// exactly, such as 12345678901234567890 or 0.1000000000000000055511151231257827,
// or "" when there is none. Such a number would be hashed, approved and
// acted on as a different value from the one the agent sent, so the call is
// refused instead of silently changed.
func inexact(raw json.RawMessage) (path, number string) {
	if len(raw) == 0 {
		return "", ""
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return "", "" // the transport decoded it; its checks stand
	}
	return walkNumbers(v, "")
}

func walkNumbers(v any, path string) (string, string) {
	switch v := v.(type) {
	case json.Number:
		if !exactInFloat64(string(v)) {
			return path, string(v)
		}
	case map[string]any:
		for k, x := range v {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if p, n := walkNumbers(x, p); n != "" {
				return p, n
			}
		}
	case []any:
		for i, x := range v {
			if p, n := walkNumbers(x, fmt.Sprintf("%s[%d]", path, i)); n != "" {
				return p, n
			}
		}
	}
	return "", ""
}

// exactInFloat64 reports whether the decimal s is exactly a float64.
func exactInFloat64(s string) bool {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return false // out of range
	}
	want, ok := new(big.Rat).SetString(s)
	if !ok {
		return false
	}
	got := new(big.Rat)
	if got.SetFloat64(f) == nil {
		return false
	}
	return got.Cmp(want) == 0
}

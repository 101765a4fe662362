package guard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
)

// inexact names the first number in raw JSON arguments that does not
// survive canonicalisation: the float64 every step after the transport
// works with, written back in its shortest form (as RFC 8785 and the tools
// write it), is a different decimal from the one the agent sent, such as
// 12345678901234567890 (which comes back as 12345678901234567000) or
// 0.1000000000000000055511151231257827 (which comes back as 0.1). It
// returns "" when there is none. Such a number would be hashed, approved
// and acted on as a different value from the one the agent sent, so the
// call is refused instead of silently changed. 0.01 survives: its shortest
// form is 0.01.
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

// exactInFloat64 reports whether the decimal s comes back as the same
// value from a float64 written in its shortest form.
func exactInFloat64(s string) bool {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return false // out of range
	}
	want, ok := new(big.Rat).SetString(s)
	if !ok {
		return false
	}
	got, ok := new(big.Rat).SetString(strconv.FormatFloat(f, 'g', -1, 64))
	return ok && got.Cmp(want) == 0
}

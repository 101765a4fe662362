package digest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
)

// InexactError names the first number in a call's JSON arguments that does
// not survive canonicalisation: the float64 every step after the transport
// works with, written back in its shortest form (as RFC 8785 and the tools
// write it), is a different decimal from the one the agent sent, such as
// 12345678901234567890 (which comes back as 12345678901234567000) or
// 0.1000000000000000055511151231257827 (which comes back as 0.1). Such a
// number would be hashed, approved and acted on as a different value from
// the one the agent sent, so the call is refused instead of silently
// changed. 0.01 survives: its shortest form is 0.01.
type InexactError struct {
	Path   string // dotted, with [i] for array elements; "" for the whole value
	Number string // as the agent wrote it
}

func (e *InexactError) Error() string {
	field := e.Path
	if field == "" {
		field = "arguments"
	}
	return fmt.Sprintf("%.64s: the number %.40s cannot be held exactly", field, e.Number)
}

// CheckExact returns an *InexactError for the first number in raw (the
// arguments as the transport received them) that canonicalisation would
// change, or nil. Raw that is not JSON passes: the transport decoded it,
// and its checks stand.
//
// It runs before the arguments are decoded again for the schema and the
// tool, on the bytes only the transport has; [NewArgs] then makes the one
// value from the decoded arguments. Nearly every number is an integer or
// a decimal of at most 15 digits, which a float64 holds exactly: a scan
// of the bytes passes them without building anything, only other numbers
// are checked one by one, and only an inexact one has its path found.
func CheckExact(raw []byte) *InexactError {
	if len(raw) == 0 || allNumbersExact(raw) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil
	}
	if path, n := walkNumbers(v, ""); n != "" {
		return &InexactError{Path: path, Number: n}
	}
	return nil
}

// allNumbersExact reports whether every number token in raw (outside
// strings) is exact in a float64. On bytes that are not JSON it may
// answer false, and CheckExact's decoder decides.
func allNumbersExact(raw []byte) bool {
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch {
		case c == '"':
			inString = true
		case c == '-' || '0' <= c && c <= '9':
			j := i
			for j < len(raw) && (raw[j] == '-' || raw[j] == '+' || raw[j] == '.' || raw[j] == 'e' || raw[j] == 'E' || '0' <= raw[j] && raw[j] <= '9') {
				j++
			}
			if !shortDecimal(raw[i:j]) && !exactInFloat64(string(raw[i:j])) {
				return false
			}
			i = j - 1
		}
	}
	return true
}

// shortDecimal reports whether tok is a decimal without exponent of at
// most 15 digits, which a float64 holds exactly: 15 is DBL_DIG, so two
// such decimals never share a float64, and the shortest form of the one
// they parse to is the decimal itself (with 15 digits and no exponent it
// is far from the subnormal range).
func shortDecimal(tok []byte) bool {
	if len(tok) > 0 && tok[0] == '-' {
		tok = tok[1:]
	}
	digits, point := 0, false
	for i, c := range tok {
		switch {
		case '0' <= c && c <= '9':
			digits++
		case c == '.' && !point && i > 0 && i < len(tok)-1:
			point = true
		default:
			return false
		}
	}
	return digits > 0 && digits <= 15
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

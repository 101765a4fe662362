package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// Args is a call's arguments in the one form every step uses: their RFC
// 8785 bytes and the SHA-256 of those bytes. Policy, approval, execution,
// the approval token and the audit log all take this value; none of them
// decodes and canonicalises the arguments again. Its fields are unexported
// so that every Args is canonical and its sum is of its bytes: one is made
// only by [NewArgs] or [ParseArgs].
type Args struct {
	json []byte
	sum  [32]byte
}

// ErrTooLarge is NewArgs's error for arguments over its byte limit.
var ErrTooLarge = errors.New("arguments too large")

// NewArgs is the canonical value of decoded arguments (map[string]any as
// a JSON decoder or a tool's Prepare makes them; nil is {}). maxBytes > 0
// limits the canonical form's size (ErrTooLarge). The bytes are exactly
// jcs.Transform(json.Marshal(v)), written in one pass for the types a
// JSON decoder makes; any other type takes that long way.
func NewArgs(v map[string]any, maxBytes int) (Args, error) {
	if v == nil {
		v = map[string]any{}
	}
	b, ok := appendCanonical(make([]byte, 0, 128), v)
	if !ok {
		raw, err := json.Marshal(v)
		if err != nil {
			return Args{}, fmt.Errorf("invalid arguments: %w", err)
		}
		if b, err = jcs.Transform(raw); err != nil {
			return Args{}, fmt.Errorf("invalid arguments: %w", err)
		}
	}
	if maxBytes > 0 && len(b) > maxBytes {
		return Args{}, fmt.Errorf("%w: larger than %d bytes", ErrTooLarge, maxBytes)
	}
	return Args{json: b, sum: sha256.Sum256(b)}, nil
}

// ParseArgs is the canonical value of arguments held as JSON text in any
// form (stored, or sent by a client that is not a tool call); empty is {}.
func ParseArgs(raw []byte) (Args, error) {
	if len(raw) == 0 {
		raw = []byte(`{}`)
	}
	b, err := jcs.Transform(raw)
	if err != nil {
		return Args{}, fmt.Errorf("invalid arguments: %w", err)
	}
	return Args{json: b, sum: sha256.Sum256(b)}, nil
}

// JSON is the RFC 8785 form; the caller must not change it.
func (a Args) JSON() json.RawMessage { return a.json }

// SHA256 is the SHA-256 of the RFC 8785 form: the args_sha256 of the audit
// log, of the action digest and of the approval token.
func (a Args) SHA256() [32]byte { return a.sum }

// Hex is SHA256 in lowercase hex, as the audit log and tokens write it.
func (a Args) Hex() string { return hex.EncodeToString(a.sum[:]) }

// IsZero reports whether a was never made.
func (a Args) IsZero() bool { return a.json == nil }

// appendCanonical appends the RFC 8785 form of v, or reports false for a
// value it does not write itself.
func appendCanonical(b []byte, v any) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), true
	case bool:
		if v {
			return append(b, "true"...), true
		}
		return append(b, "false"...), true
	case string:
		return AppendJCSString(b, v), true
	case float64:
		return appendNumber(b, v)
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return b, false
		}
		return appendNumber(b, f)
	case []any:
		b = append(b, '[')
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = appendCanonical(b, x); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			if !utf8.ValidString(k) {
				return b, false // encoding/json replaces bad bytes first; the long way does it
			}
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareUTF16)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(AppendJCSString(b, k), ':')
			var ok bool
			if b, ok = appendCanonical(b, v[k]); !ok {
				return b, false
			}
		}
		return append(b, '}'), true
	}
	return b, false
}

// appendNumber writes f as RFC 8785 does (ECMAScript's Number to string);
// NaN and infinities are not JSON, and the long way says so.
func appendNumber(b []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, false
	}
	s, err := jcs.NumberToJSON(f)
	if err != nil {
		return b, false
	}
	return append(b, s...), true
}

// compareUTF16 orders object keys as RFC 8785 does: by their UTF-16 code
// units, which differs from byte order only above U+FFFF.
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			ua, ub := utf16Units(ra), utf16Units(rb)
			return int(ua) - int(ub)
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// utf16Units is the first UTF-16 code unit of r.
func utf16Units(r rune) uint16 {
	if r >= 0x10000 {
		hi, _ := utf16.EncodeRune(r)
		return uint16(hi)
	}
	return uint16(r)
}

// AppendJCSString appends s as an RFC 8785 string: only '"', '\\' and
// control characters are escaped; invalid UTF-8 becomes U+FFFD, as
// encoding/json does before JCS sees it.
func AppendJCSString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				if c < 0x20 {
					b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
				} else {
					b = append(b, c)
				}
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// MustParseArgs is ParseArgs for arguments written in the program (tests,
// fixtures); it panics on JSON that is not.
func MustParseArgs(s string) Args {
	a, err := ParseArgs([]byte(s))
	if err != nil {
		panic(err)
	}
	return a
}

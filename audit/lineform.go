package audit

import (
	"bytes"
	"unicode/utf8"
)

// inLineForm reports whether b is certainly already in line form, that
// is lineJSON(b) would return b unchanged, without transforming it.
//
// It is a fast acceptance test, not a parser: it accepts only the plain
// shapes arguments and results usually have (ASCII keys without escapes,
// integers of at most 15 digits, strings escaped as RFC 8785 escapes
// them) and says false for anything else, which then takes the full
// RFC 8785 transform. Both the writer (for every member of every entry)
// and verify (for every member of every line) ask it, and the transform
// was a fifth of verify's time.
func inLineForm(b []byte) bool {
	end, ok := lineValue(b, 0, 0)
	return ok && end == len(b)
}

// maxLineDepth bounds lineValue's recursion; deeper values take the
// transform, which has its own limits.
const maxLineDepth = 32

func lineValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) || depth > maxLineDepth {
		return i, false
	}
	switch c := b[i]; {
	case c == '{':
		return lineObject(b, i+1, depth+1)
	case c == '[':
		return lineArray(b, i+1, depth+1)
	case c == '"':
		return lineString(b, i+1)
	case c == '-' || '0' <= c && c <= '9':
		return lineInteger(b, i)
	case c == 't':
		return lineLiteral(b, i, "true")
	case c == 'f':
		return lineLiteral(b, i, "false")
	case c == 'n':
		return lineLiteral(b, i, "null")
	}
	return i, false
}

// lineObject reads members after '{': keys plain ASCII (no escapes), in
// strictly increasing byte order, which for ASCII is RFC 8785's UTF-16
// order and also rules out duplicates.
func lineObject(b []byte, i, depth int) (int, bool) {
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	var prev []byte
	for first := true; ; first = false {
		if i >= len(b) || b[i] != '"' {
			return i, false
		}
		start := i + 1
		i = start
		for i < len(b) && b[i] != '"' {
			if c := b[i]; c < 0x20 || c >= utf8.RuneSelf || c == '\\' {
				return i, false
			}
			i++
		}
		if i >= len(b) {
			return i, false
		}
		key := b[start:i]
		if !first && bytes.Compare(prev, key) >= 0 {
			return i, false
		}
		prev = key
		i++
		if i >= len(b) || b[i] != ':' {
			return i, false
		}
		var ok bool
		if i, ok = lineValue(b, i+1, depth); !ok {
			return i, false
		}
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i + 1, true
		default:
			return i, false
		}
	}
}

func lineArray(b []byte, i, depth int) (int, bool) {
	if i < len(b) && b[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = lineValue(b, i, depth); !ok || i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i++
		case ']':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// lineString reads a string after its opening quote. RFC 8785 escapes
// '"', '\\', \b \f \n \r \t by their short forms and other control
// characters as \u00xx in lower case; line form adds \u2028 and \u2029.
// Everything else is the character itself, in valid UTF-8.
func lineString(b []byte, i int) (int, bool) {
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return i, false
				}
				switch u := string(b[i+2 : i+6]); {
				case u == "2028" || u == "2029":
				case u[0] == '0' && u[1] == '0' && (u[2] == '0' || u[2] == '1') && isLowerHex(u[3]):
					switch u[2:] {
					case "08", "09", "0a", "0c", "0d": // have short forms
						return i, false
					}
				default:
					return i, false
				}
				i += 6
			default:
				return i, false
			}
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
				return i, false
			}
			i += size
		}
	}
	return i, false
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// lineInteger reads an integer of at most 15 digits, which a float64
// holds exactly and RFC 8785 writes as its digits. "-0", fractions and
// exponents take the transform.
func lineInteger(b []byte, i int) (int, bool) {
	start := i
	if b[i] == '-' {
		i++
	}
	digits := i
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	n := i - digits
	switch {
	case n == 0 || n > 15:
		return i, false
	case b[digits] == '0' && (n > 1 || digits > start):
		return i, false
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return i, false
	}
	return i, true
}

func lineLiteral(b []byte, i int, lit string) (int, bool) {
	if !bytes.HasPrefix(b[i:], []byte(lit)) {
		return i, false
	}
	return i + len(lit), true
}

package digest

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

func TestCheckExact(t *testing.T) {
	for _, c := range []struct {
		raw, path, number string
	}{
		{`{"amount":12345678901234567890}`, "amount", "12345678901234567890"},
		{`{"amount":9007199254740993}`, "amount", "9007199254740993"},
		{`{"a":{"b":[1,0.1000000000000000055511151231257827]}}`, "a.b[1]", "0.1000000000000000055511151231257827"},
		{`12345678901234567890`, "", "12345678901234567890"},
		{`{"amount":1e400}`, "amount", "1e400"},
		// Exact: small integers, short decimals, 2^53, numbers inside strings.
		{`{"amount":0.01,"n":-123456789012345,"e":1e21,"p":9007199254740992}`, "", ""},
		{`{"s":"12345678901234567890","t":"\"9007199254740993"}`, "", ""},
		{``, "", ""},
		{`{"broken":12345678901234567890`, "", ""}, // not JSON: the transport's checks stand
	} {
		err := CheckExact([]byte(c.raw))
		if c.number == "" {
			if err != nil {
				t.Errorf("CheckExact(%s) = %v, want nil", c.raw, err)
			}
			continue
		}
		if err == nil || err.Path != c.path || err.Number != c.number {
			t.Errorf("CheckExact(%s) = %#v, want %s at %q", c.raw, err, c.number, c.path)
		}
	}
}

// The scan of the bytes may only let through what the decoder's walk
// would: it never passes a number the walk refuses.
func FuzzCheckExactScan(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":12345678901234567890}`, `{"s":"1\"2","n":[0.1,1e5,-7]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !allNumbersExact(raw) {
			return
		}
		if err := CheckExact(raw); err != nil {
			t.Fatalf("%s: the scan passed it, CheckExact refuses %v", raw, err)
		}
		// And the walk agrees on decodable input.
		if p, n := walkOf(raw); n != "" {
			t.Fatalf("%s: the scan passed it, the walk finds %s at %s", raw, n, p)
		}
	})
}

func walkOf(raw []byte) (string, string) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return "", ""
	}
	return walkNumbers(v, "")
}

// What the scan passes without the exact check must pass the exact check:
// decimals of up to 15 digits, the point anywhere.
func TestShortDecimalsAreExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200_000 {
		n := 1 + r.IntN(15)
		digits := make([]byte, n)
		for i := range digits {
			digits[i] = byte('0' + r.IntN(10))
		}
		tok := string(digits)
		if p := r.IntN(n); p > 0 {
			tok = tok[:p] + "." + tok[p:]
		}
		if r.IntN(2) == 0 {
			tok = "-" + tok
		}
		if !shortDecimal([]byte(tok)) {
			t.Fatalf("shortDecimal(%s) = false", tok)
		}
		if !exactInFloat64(tok) {
			t.Fatalf("%s passes the scan but is not exact in a float64", tok)
		}
	}
	for _, tok := range []string{"1234567890123456", "1.234567890123456", "1e5", ".5", "5.", "1.2.3", "-", ""} {
		if shortDecimal([]byte(tok)) {
			t.Errorf("shortDecimal(%q) = true", tok)
		}
	}
}

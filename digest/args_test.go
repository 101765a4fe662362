package digest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math"
	"testing"

	"github.com/gowebpki/jcs"
)

// longWay is the definition NewArgs must meet: RFC 8785 of encoding/json's
// form of the value.
func longWay(t testing.TB, v map[string]any) ([]byte, error) {
	t.Helper()
	if v == nil {
		v = map[string]any{}
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(raw)
}

func TestNewArgsIsTransformOfMarshal(t *testing.T) {
	for _, v := range []map[string]any{
		nil,
		{},
		{"account": "operating"},
		{"to": "Vendor X", "amount": 500000.0, "currency": "USD", "from": "operating"},
		{"n": 1e21, "m": 1e-7, "k": -0.0, "big": 9007199254740993.0, "small": 5e-324, "third": 1.0 / 3},
		{"html": "<a href='x'>&</a>", "sep": "\u2028\u2029", "ctl": "\x00\x01\b\f\n\r\t\x1f\x7f", "q": `"\`},
		{"bad utf8": "a\xffb\xc3", "emoji": "😀", "ä": 1.0},
		// Keys that sort differently by UTF-16 than by bytes.
		{"\uffff": 1.0, "😀": 2.0, "\ue000": 3.0, "a": 4.0},
		{"nested": map[string]any{"b": []any{1.0, "x", nil, true, false, map[string]any{}}, "a": []any{}}},
		{"num": json.Number("12.50"), "int": json.Number("7")},
		{"typed": []string{"a", "b"}, "i": 3, "i64": int64(1) << 60}, // not a decoder's types: the long way
		{"bad key \xff": 1.0},
	} {
		got, err := NewArgs(v, 0)
		if err != nil {
			t.Fatalf("%v: %v", v, err)
		}
		want, err := longWay(t, v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.JSON(), want) {
			t.Errorf("NewArgs(%v)\n got %s\nwant %s", v, got.JSON(), want)
		}
		if got.SHA256() != sha256.Sum256(want) {
			t.Errorf("NewArgs(%v): SHA256 is not of its bytes", v)
		}
		parsed, err := ParseArgs(want)
		if err != nil || !bytes.Equal(parsed.JSON(), got.JSON()) || parsed.Hex() != got.Hex() {
			t.Errorf("ParseArgs(%s) = %s, %v; NewArgs made %s", want, parsed.JSON(), err, got.JSON())
		}
	}
}

func TestNewArgsRefusesWhatJSONCannotHold(t *testing.T) {
	for _, v := range []map[string]any{{"nan": math.NaN()}, {"inf": math.Inf(1)}, {"ch": make(chan int)}} {
		if a, err := NewArgs(v, 0); err == nil {
			t.Errorf("NewArgs(%v) = %s, want an error", v, a.JSON())
		}
	}
}

func TestNewArgsLimitsTheCanonicalSize(t *testing.T) {
	v := map[string]any{"note": "0123456789"} // {"note":"0123456789"}: 21 bytes
	if _, err := NewArgs(v, 21); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if _, err := NewArgs(v, 20); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit: %v, want ErrTooLarge", err)
	}
}

func TestParseArgsAndArgsSHA256Agree(t *testing.T) {
	a, err := ParseArgs([]byte(` { "b" : 2.50, "a" : [ 1 , "x" ] } `))
	if err != nil {
		t.Fatal(err)
	}
	if string(a.JSON()) != `{"a":[1,"x"],"b":2.5}` {
		t.Fatalf("ParseArgs: %s", a.JSON())
	}
	sum, err := ArgsSHA256([]byte(`{"b":2.5,"a":[1,"x"]}`))
	if err != nil || sum != a.SHA256() {
		t.Fatalf("ArgsSHA256 = %x, %v; ParseArgs's sum %x", sum, err, a.SHA256())
	}
	if empty, err := ParseArgs(nil); err != nil || string(empty.JSON()) != `{}` {
		t.Fatalf("ParseArgs(nil) = %s, %v", empty.JSON(), err)
	}
	if _, err := ParseArgs([]byte(`{"a":`)); err == nil {
		t.Fatal("ParseArgs accepted broken JSON")
	}
	if !(Args{}).IsZero() || a.IsZero() {
		t.Fatal("IsZero")
	}
}

// FuzzNewArgs holds the one-pass writer to its definition on whatever a
// JSON decoder makes of arbitrary input.
func FuzzNewArgs(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":[1.5,"x",null,true]}`, `{"😀":1,"\uffff":2}`, `{"s":"\u0000\u2028<>&"}`, `{"n":1e400}`, `{"n":-0.0,"m":123456789012345678}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var v map[string]any
		if json.Unmarshal(raw, &v) != nil {
			return
		}
		want, werr := longWay(t, v)
		got, gerr := NewArgs(v, 0)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%s: long way err %v, NewArgs err %v", raw, werr, gerr)
		}
		if werr == nil && !bytes.Equal(got.JSON(), want) {
			t.Fatalf("%s:\n got %s\nwant %s", raw, got.JSON(), want)
		}
	})
}

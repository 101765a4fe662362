package audit

import (
	"bytes"
	"testing"
)

var lineFormCases = []struct {
	in   string
	fast bool // inLineForm must say true
}{
	{`{}`, true},
	{`[]`, true},
	{`{"amount":120,"currency":"USD","to":"Acme Supplies"}`, true},
	{`{"a":[1,-2,true,false,null,{"b":"c"}],"z":""}`, true},
	{`{"memo":"tab\there \"quoted\" back\\slash \u001f nl\n"}`, true},
	{`{"s":"caf\u00e9"}`, false}, // RFC 8785 writes é itself
	{"{\"s\":\"café ✓\"}", true},
	{`{"s":"\u2028"}`, true}, // line form escapes U+2028
	{"{\"s\":\"\u2028\"}", false},
	{`{"s":"a\/b"}`, false},
	{`{"s":"\u0008"}`, false}, // \b has a short form
	{`{"s":"\u001F"}`, false}, // upper-case hex
	{`{"b":1,"a":2}`, false},  // out of order
	{`{"a":1,"a":2}`, false},  // duplicate
	{`{"a":1, "b":2}`, false}, // space
	{`{"a":1.5}`, false},      // the transform decides
	{`{"a":1e3}`, false},
	{`{"a":-0}`, false},
	{`{"a":007}`, false},
	{`{"a":1234567890123456}`, false}, // 16 digits
	{`{"a":123456789012345}`, true},
	{`{"é":1}`, false},
	{`{"a":1}x`, false},
	{`{"a":`, false},
	{`"`, false},
	{"\"\xff\"", false},
	{`tru`, false},
	{``, false},
}

func TestInLineForm(t *testing.T) {
	for _, c := range lineFormCases {
		if got := inLineForm([]byte(c.in)); got != c.fast {
			t.Errorf("inLineForm(%s) = %v, want %v", c.in, got, c.fast)
		}
		checkLineForm(t, []byte(c.in))
	}
}

// checkLineForm holds inLineForm to its promise: whatever it accepts,
// lineJSON (the RFC 8785 transform) leaves unchanged.
func checkLineForm(t *testing.T, b []byte) {
	t.Helper()
	if !inLineForm(b) {
		return
	}
	c, err := lineJSON(b)
	if err != nil {
		t.Fatalf("inLineForm accepted %q, which lineJSON refuses: %v", b, err)
	}
	if !bytes.Equal(c, b) {
		t.Fatalf("inLineForm accepted %q, but its line form is %q", b, c)
	}
}

func FuzzInLineForm(f *testing.F) {
	for _, c := range lineFormCases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkLineForm(t, b)
		// Whatever lineJSON writes is the line form: if it is one of
		// the plain shapes, inLineForm should know it.
		if c, err := lineJSON(b); err == nil {
			checkLineForm(t, c)
		}
	})
}

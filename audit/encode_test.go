package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/countersign/countersign/vocab"
)

// The writer's spliced encoding must equal the reference one the
// verifier uses, for every shape of entry.
func TestPreparedMatchesReference(t *testing.T) {
	entries := append(sampleEntries(),
		Entry{Kind: "x"},
		Entry{Kind: "a\"b\\c,{}[]", Agent: "é\u2028\x01", Args: json.RawMessage(`{"z":[1,{"y":"}"}],"a":1.50,"m":"\"seq\":"}`), UserVerified: true},
		Entry{Kind: vocab.KindApproverEnrolled, Approver: "alice", CredentialID: "abc", PublicKey: "pQECAyYgASFYIA", Origin: "http://localhost:8710", RPID: "localhost"},
	)
	prev := [32]byte{1, 2, 3}
	for i, e := range entries {
		if _, err := prepare(&e); err != nil {
			t.Fatal(err)
		}
		pre, err := prepareEncoding(&e, false)
		if err != nil {
			t.Fatal(err)
		}
		e.Seq, e.Time, e.PrevHash = int64(i)*1000+7, "2026-03-01T09:30:01.000000001Z", hex.EncodeToString(prev[:])
		want, err := chainHash(prev, &e)
		if err != nil {
			t.Fatal(err)
		}
		if got := pre.hash(prev, e.Seq, e.Time); got != want {
			t.Fatalf("entry %d: spliced hash differs from the reference", i)
		}
		e.Hash, e.Sig = hex.EncodeToString(want[:]), "c2ln"
		wantLine, _ := encodeLine(&e)
		if got := pre.line(&e); !bytes.Equal(got, wantLine) {
			t.Fatalf("entry %d: line\n%s\nwant\n%s", i, got, wantLine)
		}
		prev = want
	}
}

func TestEntryKeysCoverEntry(t *testing.T) {
	writer := map[string]bool{"seq": true, "time": true, "prev_hash": true, "hash": true, "sig": true}
	known := map[string]bool{}
	for _, k := range entryKeys {
		known[k] = true
	}
	typ := reflect.TypeOf(Entry{})
	for i := range typ.NumField() {
		key, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if !writer[key] && !known[key] {
			t.Errorf("Entry field %s (%q) is not in entryKeys/membersOf: the writer would hash it differently from Verify", typ.Field(i).Name, key)
		}
	}
	if len(entryKeys)+len(writer) != typ.NumField() {
		t.Errorf("entryKeys has %d keys, Entry has %d fields", len(entryKeys), typ.NumField())
	}
}

func FuzzCanonicalMembers(f *testing.F) {
	f.Add("transfer", "Vendor X & Söhne", []byte(`{"a":1}`), true)
	f.Add("\x00\x1f\"\\\u2028\xff", "\t\n\r\b\f\u007f", []byte(`[1e3,-0,"\u00e9"]`), false)
	f.Fuzz(func(t *testing.T, kind, text string, args []byte, uv bool) {
		if kind == "" || !json.Valid(args) {
			return
		}
		e := Entry{Kind: vocab.Kind(kind), Display: text, Reason: text + kind, Args: args, UserVerified: uv,
			ArgsSeq: int64(len(text)), ReasonSHA256: kind, ResultSize: int64(len(args)), InterruptedSeq: int64(len(kind))}
		pre, err := prepareEncoding(&e, false)
		e.Seq, e.Time, e.PrevHash = 5, "2026-03-01T09:30:01.000000001Z", strings.Repeat("0", 64)
		want, refErr := chainHash([32]byte{}, &e)
		if (err != nil) != (refErr != nil) {
			t.Fatalf("prepareEncoding error %v, reference %v", err, refErr)
		}
		if err != nil {
			return
		}
		if got := pre.hash([32]byte{}, e.Seq, e.Time); got != want {
			t.Fatalf("canonical members differ from jcs.Transform for %q %q %s", kind, text, args)
		}
	})
}

// The exact byte form docs/audit-export.md promises: JSON members in
// RFC 8785 form whatever the caller passed (here json.Marshal's HTML
// escapes), strings escaped as docString says and nothing else.
func TestLineByteForm(t *testing.T) {
	l := openLogWith(t, seededKey(1), nil)
	args, _ := json.Marshal(map[string]any{"to": "A & B <ltd>", "amount": 1.50, "note": "\u2028"})
	if !bytes.Contains(args, []byte(`\u003c`)) {
		t.Fatalf("json.Marshal no longer escapes HTML: %s", args)
	}
	e := mustAppend(t, l, Entry{Kind: vocab.KindCallAllowed, Tool: "t", Args: args, Display: "<b>&</b>"})
	line := exportLine(t, l, e.Seq)
	want := `"args":{"amount":1.5,"note":"\u2028","to":"A & B <ltd>"}`
	if !bytes.Contains(line, []byte(want)) || !bytes.Contains(line, []byte(`"display":"<b>&</b>"`)) {
		t.Fatalf("line %s\nwant it to contain %s", line, want)
	}

	// Strings other than JSON members: every rune of the BMP and a few
	// beyond.
	var b strings.Builder
	for r := rune(0); r < 0x10000; r++ {
		if r < 0xd800 || r > 0xdfff {
			b.WriteRune(r)
		}
	}
	b.WriteString("\U0001F600\U0010FFFF")
	s := b.String()
	got, err := encodeLine(&Entry{Kind: vocab.KindCallAllowed, Display: s})
	if err != nil {
		t.Fatal(err)
	}
	if wantLine := `{"seq":0,"time":"","kind":"call.allowed","display":` + docString(s) + `,"prev_hash":""}`; string(got) != wantLine {
		for i := range min(len(got), len(wantLine)) {
			if got[i] != wantLine[i] {
				t.Fatalf("string encoding differs from the documented one at byte %d: %q vs %q", i, got[i:min(i+20, len(got))], wantLine[i:min(i+20, len(wantLine))])
			}
		}
		t.Fatalf("string encoding differs from the documented one in length")
	}
}

// docString is the string encoding as docs/audit-export.md states it.
func docString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20, r == 0x2028, r == 0x2029:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// exportLine is the exported line of one entry.
func exportLine(t *testing.T, l *Log, seq int64) []byte {
	t.Helper()
	lines, _ := splitExport(t, exportBytes(t, l, seq-1))
	return lines[0]
}

// An entry as Append prepares it is encoded once: its line is built from
// the hashed members, and must be encodeLine's byte for byte.
func TestPreparedLineIsEncodeLine(t *testing.T) {
	entries := append(sampleEntries(),
		Entry{Kind: "x"},
		Entry{Kind: "a\"b\\c,{}[]", Agent: "é\x01<>&\x7f\b\f", Args: json.RawMessage(`{"z":[1,{"y":"}"}],"a":1.50,"m":"\"seq\":"}`), UserVerified: true},
		Entry{Kind: vocab.KindCallAllowed, Display: "sep \u2028 \u2029", Reason: "bad \xff utf8", Args: json.RawMessage(`{"s":"\u2028"}`)},
		Entry{Kind: vocab.KindCallAllowed, Display: "replacement \ufffd as sent"},
		Entry{Kind: vocab.KindApproverEnrolled, Approver: "alice", CredentialID: "abc", PublicKey: "pQECAyYgASFYIA", Origin: "http://localhost:8710", RPID: "localhost"},
	)
	for i, e := range entries {
		checkPreparedLine(t, fmt.Sprint("entry ", i), e)
	}
}

func checkPreparedLine(t *testing.T, name string, e Entry) {
	t.Helper()
	pre, err := prepare(&e)
	if err != nil {
		return
	}
	e.Seq, e.Time, e.PrevHash, e.Hash, e.Sig = 9, "2026-03-01T09:30:01.000000001Z", strings.Repeat("0", 64), strings.Repeat("1", 64), "c2ln"
	want, err := encodeLine(&e)
	if err != nil {
		t.Fatal(err)
	}
	if got := pre.line(&e); !bytes.Equal(got, want) {
		t.Fatalf("%s: line\n%s\nwant\n%s", name, got, want)
	}
}

func FuzzPreparedLine(f *testing.F) {
	f.Add("transfer", "Vendor X & Söhne", []byte(`{"a":1}`), true)
	f.Add("\x00\x1f\"\\\u2028\xff", "\t\n\r\b\f\u007f\ufffd", []byte(`[1e3,-0,"\u00e9","\u2029"]`), false)
	f.Fuzz(func(t *testing.T, kind, text string, args []byte, uv bool) {
		if kind == "" || !json.Valid(args) {
			return
		}
		checkPreparedLine(t, fmt.Sprintf("%q %q %s", kind, text, args), Entry{Kind: vocab.Kind(kind), Display: text, Reason: text + kind,
			Args: args, UserVerified: uv, Eligible: []string{text, kind}, Quorum: len(text), Result: args})
	})
}

// A routine call's entry takes the one-encoding way, not encodeLine.
func TestRoutineEntryIsEncodedOnce(t *testing.T) {
	e := Entry{Kind: vocab.KindCallAllowed, Agent: "bot", Tool: "get_balance", Args: json.RawMessage(`{"account":"operating"}`), Decision: "low"}
	if _, err := prepare(&e); err != nil {
		t.Fatal(err)
	}
	members, err := membersOf(&e, alreadyCanonical)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := lineMiddle(members); !ok {
		t.Fatal("a plain entry's line was not built from its members")
	}
}

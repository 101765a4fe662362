package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The writer's spliced encoding must equal the reference one the
// verifier uses, for every shape of entry.
func TestPreparedMatchesReference(t *testing.T) {
	entries := append(sampleEntries(),
		Entry{Kind: "x"},
		Entry{Kind: "a\"b\\c,{}[]", Agent: "é\u2028\x01", Args: json.RawMessage(`{"z":[1,{"y":"}"}],"a":1.50,"m":"\"seq\":"}`), UserVerified: true},
		Entry{Kind: KindApproverEnrolled, Approver: "alice", CredentialID: "abc", PublicKey: "pQECAyYgASFYIA", Origin: "http://localhost:8710", RPID: "localhost"},
	)
	prev := [32]byte{1, 2, 3}
	for i, e := range entries {
		if _, err := prepare(&e); err != nil {
			t.Fatal(err)
		}
		pre, err := prepareEncoding(&e)
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
			t.Errorf("Entry field %s (%q) is not in entryKeys/canonicalMembers: the writer would hash it differently from Verify", typ.Field(i).Name, key)
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
		e := Entry{Kind: kind, Display: text, Reason: text + kind, Args: args, UserVerified: uv}
		pre, err := prepareEncoding(&e)
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

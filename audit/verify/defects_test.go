package verify

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// Issue 27 listed fifteen places in docs/audit-export.md where an outside
// implementer had to guess. Each case pins what the document now says,
// by its number; the signature-free ones (11) are said in the document
// only. The log is the example log (seq 1-24) and the grant log after it
// (25-31): see exampleEntries and grantEntries.
func TestDocumentDefects(t *testing.T) {
	dir := t.TempDir()
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub := pubText(key)
	keys := newExampleKeys(t)
	l := openLog(t, storetest.Open(t, dir), key, audit.Options{Now: stepClock()})
	for _, e := range append(exampleEntries(t, keys), grantEntries(t, keys)...) {
		appendExample(t, l, e)
	}
	export := exportBytes(t, l, 0)
	if _, err := Export(bytes.NewReader(export), pub, Options{}); err != nil {
		t.Fatal(err)
	}
	forged := func(edit func([]audit.Entry) []audit.Entry) func(*testing.T) []byte {
		return func(t *testing.T) []byte { return forge(t, export, key, edit) }
	}
	// lineEdit changes the text of one line without touching its hash:
	// what the hash covers (the JCS form) stays the same.
	lineEdit := func(seq int64, old, new string) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			entries, cp := splitExport(t, export)
			line := string(entries[seq-1])
			if !strings.Contains(line, old) {
				t.Fatalf("seq %d has no %s: %s", seq, old, line)
			}
			entries[seq-1] = []byte(strings.Replace(line, old, new, 1))
			return joinExport(entries, cp)
		}
	}
	// insertAfter inserts after seq an edited copy of the entry at from,
	// and moves the seqs later entries name one on.
	insertAfter := func(seq int64, edit func(*audit.Entry), from int64) func([]audit.Entry) []audit.Entry {
		return func(es []audit.Entry) []audit.Entry {
			x := es[from-1]
			edit(&x)
			later := func(n *int64) {
				if *n > seq {
					*n++
				}
			}
			for i := range es {
				for j := range es[i].Assertions {
					later(&es[i].Assertions[j])
				}
				later(&es[i].GrantSeq)
				later(&es[i].ArgsSeq)
			}
			return slices.Insert(es, int(seq), x)
		}
	}
	// forRequest edits every entry of request id.
	forRequest := func(id string, edit func(*audit.Entry)) func([]audit.Entry) []audit.Entry {
		return func(es []audit.Entry) []audit.Entry {
			for i := range es {
				if es[i].RequestID == id {
					edit(&es[i])
				}
			}
			return es
		}
	}
	const usage = `{"calls_10m":1,"calls_1h":2}`

	cases := []struct {
		defect int
		name   string
		export func(*testing.T) []byte
		seq    int64  // 0: verifies
		reason string // the refusal
	}{
		{1, "usage is a JSON member, in RFC 8785 form", forged(at(5, func(e *audit.Entry) { e.Usage = json.RawMessage(usage) })), 0, ""},
		{1, "usage out of RFC 8785 order is refused", func(t *testing.T) []byte {
			exp := forge(t, export, key, at(5, func(e *audit.Entry) { e.Usage = json.RawMessage(usage) }))
			entries, cp := splitExport(t, exp)
			if !bytes.Contains(entries[4], []byte(usage)) {
				t.Fatalf("no usage on %s", entries[4])
			}
			entries[4] = bytes.Replace(entries[4], []byte(usage), []byte(`{"calls_1h":2,"calls_10m":1}`), 1)
			return joinExport(entries, cp)
		}, 5, "usage is not in RFC 8785 form"},
		{2, "reason on call.executed", forged(at(6, func(e *audit.Entry) { e.Reason = "recorded at start: the ledger committed it" })), 0, ""},
		{2, "agent on approval.rejected", forged(at(9, func(e *audit.Entry) { e.Agent = "agent-1" })), 0, ""},
		{2, "call.interrupted as an outcome", forged(at(23, func(e *audit.Entry) {
			e.Kind, e.Reason, e.PolicySHA256 = vocab.KindCallInterrupted, "server restarted", ""
		})), 0, ""},
		{2, "audit.rollback_accepted with its reason", forged(func(es []audit.Entry) []audit.Entry {
			return append(es, audit.Entry{V: audit.Format, Kind: vocab.KindRollbackAccepted, Reason: "witness file at tree size 40, log at 31"})
		}), 0, ""},
		{3, "a negative number", forged(at(6, func(e *audit.Entry) { e.ArgsSeq = -1 })), 6, "args_seq -1 is not an earlier entry"},
		{3, "a number with a leading zero", lineEdit(6, `"args_seq":5,`, `"args_seq":05,`), 6, "not a JSON entry"},
		{3, "a number with an exponent", lineEdit(6, `"args_seq":5,`, `"args_seq":5e0,`), 6, ""},
		{4, "approver on a format 3 approval.rejected", forged(at(9, func(e *audit.Entry) { e.Approver = "carol" })), 9,
			"approval.rejected carries approver, which the kinds table does not list for it"},
		{4, "level on call.executed", forged(at(12, func(e *audit.Entry) { e.Level = vocab.LevelCritical })), 12,
			"call.executed carries level, which the kinds table does not list for it"},
		{4, "decided_at on call.denied", forged(at(15, func(e *audit.Entry) { e.DecidedAt = "2026-03-01T09:31:00.000000000Z" })), 15,
			"call.denied carries decided_at"},
		{5, "non-zero pad bits in nonce", forged(forRequest("req-A", func(e *audit.Entry) {
			if e.Nonce != "" {
				e.Nonce = setPadBit(t, e.Nonce)
			}
		})), 7,
			"nonce is not base64url with zero pad bits"},
		{6, "an interrupted run is the one run of its request", forged(func(es []audit.Entry) []audit.Entry {
			es[22].Kind, es[22].PolicySHA256 = vocab.KindCallInterrupted, ""
			return slices.Insert(es, 23, es[22])
		}), 24, "request req-D already ran at seq 23"},
		{6, "an approved request run by another agent", forged(at(12, func(e *audit.Entry) { e.Agent = "agent-2" })), 12, "was raised by agent"},
		{7, "a grant is created at its assertion's decided_at", forged(at(29, func(e *audit.Entry) { e.DecidedAt = "2026-03-01T09:30:59.000000000Z" })), 29,
			"before grant G1 was created at 2026-03-01T09:31:00"},
		{8, "a batch assertion that also creates a grant", func(t *testing.T) []byte {
			return forge(t, batchLog(t, newEdKey(t, "alice", 11)), key, at(5, func(e *audit.Entry) {
				e.GrantID, e.GrantMaxCalls, e.GrantExpiresAt, e.GrantCondition = "G1", 1, "2026-03-01T09:45:00Z", "true"
			}))
		}, 5, "a batch approval cannot create a standing grant"},
		{9, "a grant condition whose static type is not bool", forged(at(26, func(e *audit.Entry) {
			e.GrantCondition = "args.to"
			keys.alice.sign(e, origin, rpID, flagUserPresent|flagUserVerified)
		})), 26, "bool"},
		{12, "the latest enrollment of a credential id applies", forged(insertAfter(7, func(e *audit.Entry) { e.Approver = "mallory" }, 2)), 9,
			`is not the owner "mallory"`},
		{13, "an identical repeat of a request differs only in writer members", forged(insertAfter(10, func(e *audit.Entry) { e.Reason = "appended again" }, 7)), 0, ""},
		{13, "a repeat with another quorum is not identical", forged(insertAfter(10, func(e *audit.Entry) { e.Quorum = 3 }, 7)), 11,
			"request req-A was already requested at seq 7"},
		{14, "decided_at on a granted call's outcome", forged(at(30, func(e *audit.Entry) { e.DecidedAt = "2026-03-01T09:32:01.000000000Z" })), 0, ""},
		{15, "policy_sha256 applies to a granted call.allowed", forged(at(29, func(e *audit.Entry) { e.PolicySHA256 = "" })), 29,
			"call.allowed names no policy, after a policy was loaded at seq 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exp := tc.export(t)
			if tc.seq == 0 {
				if _, err := Export(bytes.NewReader(exp), pub, Options{AllSignatures: true}); err != nil {
					t.Fatalf("defect %d: %v", tc.defect, err)
				}
				return
			}
			wantVerifyErr(t, exp, pub, nil, tc.seq, tc.reason)
		})
	}
}

// setPadBit sets the lowest unused bit of a base64url text's last
// character: the same bytes to a lenient decoder, another text.
func setPadBit(t *testing.T, s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if len(s)%4 == 0 {
		t.Fatalf("%q has no pad bits", s)
	}
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[i|1])
}

// Defect 10: RSASSA-PSS signatures verify with any salt length the key
// allows, recovered from the signature, as the server accepted them.
func TestPSSSaltLength(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cose, err := webauthncbor.Marshal(webauthncose.RSAPublicKeyData{
		PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.RSAKey), Algorithm: int64(webauthncose.AlgPS256)},
		Modulus:       priv.N.Bytes(),
		Exponent:      big.NewInt(int64(priv.E)).Bytes(),
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := parseCredentialKey(base64.RawURLEncoding.EncodeToString(cose))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("authenticator data || SHA-256(client data)")
	h := sha256.Sum256(msg)
	for _, salt := range []int{0, sha256.Size, rsa.PSSSaltLengthEqualsHash, priv.Size() - sha256.Size - 2} {
		sig, err := rsa.SignPSS(rand.Reader, priv, crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: salt})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := webauthncose.VerifySignature(key, msg, sig); !ok || err != nil {
			t.Errorf("PS256 with salt length %d: %v %v", salt, ok, err)
		}
	}
}

// The members table names every member of audit.Entry, in line order,
// so a member added to the entry is refused until a kind lists it.
func TestMembersTableNamesEveryMember(t *testing.T) {
	var names []string
	for f := range reflect.TypeFor[audit.Entry]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "seq", "time", "v", "kind", "prev_hash", "hash", "sig":
			continue
		}
		names = append(names, name)
	}
	if !slices.Equal(names, memberNames[:]) {
		t.Fatalf("audit.Entry's members:\n%v\nthe members table:\n%v", names, memberNames)
	}
	for _, k := range vocab.Kinds() {
		if _, ok := kindMembers[k]; !ok {
			t.Errorf("kind %s has no row in the members table", k)
		}
	}
}

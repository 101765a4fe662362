package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// batchLog builds: 1 enrolled alice, 2-4 requested req-1..3 (high,
// batchable), 5-7 one batch assertion recorded once per request, 8-10
// approved. It returns the export and the digests in signed order.
func batchLog(t *testing.T, k *softKey) []byte {
	db := storetest.Open(t, t.TempDir())
	l := openLog(t, db, seededKey(1), audit.Options{Now: stepClock()})
	mustAppend(t, l, audit.Entry{Kind: vocab.KindApproverEnrolled, Approver: "alice", CredentialID: k.id, PublicKey: k.cose(), Origin: origin, RPID: rpID})
	ids := []string{"req-1", "req-2", "req-3"}
	var decisions []*audit.Entry
	for i, id := range ids {
		r := requested(id, vocab.LevelHigh, 1, vocab.UVPreferred, "alice", "bob")
		r.Batchable = true
		r.Nonce = base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{byte(i + 1)}, 32))
		mustAppend(t, l, r)
		d := r
		d.Kind, d.Decision, d.DecidedAt = vocab.KindApprovalAssertion, string(vocab.Approve), "2026-03-01T09:31:00.000000000Z"
		d.Level, d.Rule, d.Quorum, d.Eligible, d.UserVerification, d.Batchable = "", "", 0, nil, "", false
		decisions = append(decisions, &d)
	}
	signBatch(t, k, decisions, flagUserPresent)
	for _, d := range decisions {
		mustAppend(t, l, *d)
	}
	for i, id := range ids {
		done := *decisions[i]
		done.Kind, done.Approvers, done.Assertions = vocab.KindApprovalApproved, []string{"alice"}, []int64{int64(5 + i)}
		done.Approver, done.CredentialID, done.DecidedAt, done.Origin, done.RPID, done.UserVerified = "", "", "", "", "", false
		done.AuthenticatorData, done.ClientDataJSON, done.Signature, done.BatchDigests, done.BatchPosition = "", "", "", nil, 0
		_ = id
		mustAppend(t, l, done)
	}
	return exportBytes(t, l, 0)
}

// signBatch signs one assertion over the batch of entries and records it
// on each with the list and its position, as the server does.
func signBatch(t *testing.T, k *softKey, entries []*audit.Entry, flags byte) {
	var list [][32]byte
	for _, e := range entries {
		list = append(list, actionDigest(t, e))
	}
	sorted, err := digest.SortBatch(list)
	if err != nil {
		t.Fatal(err)
	}
	challenge, err := digest.BatchChallenge(sorted)
	if err != nil {
		t.Fatal(err)
	}
	var hexes []string
	for _, d := range sorted {
		hexes = append(hexes, hex.EncodeToString(d[:]))
	}
	var signed audit.Entry
	k.signChallenge(&signed, challenge, origin, rpID, flags)
	for i, e := range entries {
		e.Approver, e.CredentialID, e.Origin, e.RPID, e.UserVerified = signed.Approver, signed.CredentialID, signed.Origin, signed.RPID, signed.UserVerified
		e.AuthenticatorData, e.ClientDataJSON, e.Signature = signed.AuthenticatorData, signed.ClientDataJSON, signed.Signature
		e.BatchDigests = hexes
		e.BatchPosition = slices.Index(sorted, list[i])
	}
}

func TestVerifyBatchApproval(t *testing.T) {
	key := seededKey(1)
	pub := pubText(key)
	k := newSoftKey(t)
	export := batchLog(t, k)
	s, err := Export(bytes.NewReader(export), pub, Options{AllSignatures: true})
	if err != nil {
		t.Fatalf("%v\n%s", err, export)
	}
	if s.Assertions != 3 || s.Approvals != 3 {
		t.Fatalf("verified %d assertions and %d approvals, want 3 and 3: %s", s.Assertions, s.Approvals, s)
	}
	lines, _ := splitExport(t, export)
	if !bytes.Contains(lines[4], []byte(`"batch_digests":["`)) || !bytes.Contains(lines[1], []byte(`"batchable":true`)) {
		t.Fatalf("the export does not show the batch:\n%s\n%s", lines[1], lines[4])
	}

	// Each forgery is re-signed with the server key, so only the
	// approver's signature and the recorded batch can catch it.
	at := func(seq int64, f func(*audit.Entry)) func(*audit.Entry) {
		return func(e *audit.Entry) {
			if e.Seq == seq {
				f(e)
			}
		}
	}
	cases := []struct {
		name   string
		mutate func(*audit.Entry)
		seq    int64
		reason string
	}{
		{"request's digest changed in the list", at(6, func(e *audit.Entry) {
			e.BatchDigests = slices.Clone(e.BatchDigests)
			e.BatchDigests[e.BatchPosition] = hex.EncodeToString(bytes.Repeat([]byte{0xee}, 32))
		}), 6, "this entry's action digest is not batch_digests["},
		{"request's digest removed from the list", at(6, func(e *audit.Entry) {
			e.BatchDigests = slices.Delete(slices.Clone(e.BatchDigests), e.BatchPosition, e.BatchPosition+1)
			e.BatchPosition = 0
		}), 6, "this entry's action digest is not batch_digests[0]"},
		{"another request removed from the list", at(6, func(e *audit.Entry) {
			other := (e.BatchPosition + 1) % 3
			e.BatchDigests = slices.Delete(slices.Clone(e.BatchDigests), other, other+1)
			if other < e.BatchPosition {
				e.BatchPosition--
			}
		}), 6, "challenge is not the batch challenge of batch_digests (2 requests)"},
		{"list reordered", at(6, func(e *audit.Entry) {
			e.BatchDigests = []string{e.BatchDigests[2], e.BatchDigests[1], e.BatchDigests[0]}
			e.BatchPosition = 2 - e.BatchPosition
		}), 6, "batch_digests: digest: a batch is one or more distinct action digests: digest 1 is not above digest 0"},
		{"wrong position", at(6, func(e *audit.Entry) { e.BatchPosition = (e.BatchPosition + 1) % 3 }), 6, "is not batch_digests["},
		{"position outside the list", at(6, func(e *audit.Entry) { e.BatchPosition = 3 }), 6, "batch_position 3 is outside batch_digests (3 digests)"},
		{"batch dropped: a single approval's challenge", at(6, func(e *audit.Entry) { e.BatchDigests, e.BatchPosition = nil, 0 }), 6, "challenge is not the action digest of this entry"},
		{"request's display changed", at(6, func(e *audit.Entry) { e.Display = "Approve $5 transfer" }), 6, "this entry's action digest is not batch_digests["},
		{"request raised not batchable", at(3, func(e *audit.Entry) { e.Batchable = false }), 6, "request req-2 was not raised batchable"},
		{"batchable critical request", at(3, func(e *audit.Entry) { e.Level, e.UserVerification = vocab.LevelCritical, vocab.UVRequired }), 3, "a critical request cannot be batchable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantVerifyErr(t, resign(t, export, key, tc.mutate), pub, nil, tc.seq, tc.reason)
		})
	}

	t.Run("a batch denial", func(t *testing.T) {
		forged := resign(t, export, key, at(6, func(e *audit.Entry) { e.Kind, e.Decision = vocab.KindApprovalDenied, string(vocab.Deny) }))
		wantVerifyErr(t, forged, pub, nil, 6, "approval.denied cannot be part of a batch")
	})
	t.Run("a batch assertion on a request outside it", func(t *testing.T) {
		// Request req-2's entry claims req-1's place in the batch: its own
		// digest is not there.
		forged := resign(t, export, key, func(e *audit.Entry) {
			if e.Seq == 6 {
				e.BatchPosition = slices.IndexFunc(e.BatchDigests, func(h string) bool { return h != e.BatchDigests[e.BatchPosition] })
			}
		})
		wantVerifyErr(t, forged, pub, nil, 6, fmt.Sprintf("is not batch_digests[%d]", 0))
	})
}

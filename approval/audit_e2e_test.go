package approval

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
	"golang.org/x/mod/sumdb/note"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// With the real audit log in the same database, an export of enrollment,
// approvals (one redacted), a quorum, a denial and a refused assertion must
// pass the offline verifier, which recomputes every digest and checks every
// signature against the enrolled COSE keys.
func TestRealAuditLogExportVerifies(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f, log, key := loggedFixtureOn(t, db)
		svc, db := f.svc, f.db

		alice, bob := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)

		redacted := paymentRequest("alice")
		redacted.RedactArgs = true
		r1, _ := svc.Create(ctx, redacted)
		if _, err := f.decide(t, r1.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
		critical := paymentRequest("alice", "bob")
		critical.Level = "critical"
		r2, _ := svc.Create(ctx, critical)
		f.decide(t, r2.ID, vocab.Approve, alice)
		// As if alice's assertion had been appended by a server that did not
		// yet note seqs: the approval finds it in the log.
		if _, err := db.Exec(`DELETE FROM approval_logged_assertions WHERE request_id = ?`, r2.ID); err != nil {
			t.Fatal(err)
		}
		if r, err := f.decide(t, r2.ID, vocab.Approve, bob); err != nil || r.State != vocab.StateApproved {
			t.Fatalf("quorum: %v %v", r, err)
		}
		// The MCP server's part: run each approved request once and record it.
		for _, r := range []*Request{r1, r2} {
			ran(t, svc, log, r)
		}
		r3, _ := svc.Create(ctx, paymentRequest("bob"))
		if _, err := f.decide(t, r3.ID, vocab.Deny, bob); err != nil {
			t.Fatal(err)
		}
		r4, _ := svc.Create(ctx, paymentRequest("alice"))
		alice.Origin = "http://evil.example"
		if _, err := f.decide(t, r4.ID, vocab.Approve, alice); err == nil {
			t.Fatal("wrong origin accepted")
		}
		svc.Cancel(ctx, r4.ID, "test over")

		export, sum := verifiedExport(t, log)
		// 1 + 2 approve assertions + 1 deny; both approvals met their quorum
		// and both executions match them.
		if sum.Assertions != 4 || sum.Approvals != 2 || sum.Executions != 2 {
			t.Fatalf("verifier checked %d assertions, %d approvals, %d executions: %s", sum.Assertions, sum.Approvals, sum.Executions, sum)
		}

		// The forgery: bob's assertion deleted from the 2-of-2
		// approval, everything re-signed with the server key from this data
		// directory. It used to verify.
		entries := exportEntries(t, export)
		var bobSeq, approvedSeq int64
		for _, e := range entries {
			if e.RequestID == r2.ID && e.Kind == vocab.KindApprovalAssertion && e.Approver == "bob" {
				bobSeq = e.Seq
			}
			if e.RequestID == r2.ID && e.Kind == vocab.KindApprovalApproved {
				approvedSeq = e.Seq
				if !slices.Equal(e.Approvers, []string{"alice", "bob"}) || len(e.Assertions) != 2 || e.Assertions[1] != bobSeq {
					t.Fatalf("approval.approved of the 2-of-2 request: approvers %v assertions %v (bob's is seq %d)", e.Approvers, e.Assertions, bobSeq)
				}
			}
		}
		forged := resignExport(t, key, slices.DeleteFunc(entries, func(e audit.Entry) bool { return e.Seq == bobSeq }))
		_, err := verify.Export(bytes.NewReader(forged), log.PublicKey(), verify.Options{})
		var ve *verify.Error
		if !errors.As(err, &ve) || ve.Seq != approvedSeq-1 || !strings.Contains(ve.Reason, "is not an earlier approval.assertion of request "+r2.ID) {
			t.Fatalf("export without bob's assertion: %v", err)
		}

		// A countersigned execution relabelled as a routine one.
		entries = exportEntries(t, export)
		for i, e := range entries {
			if e.Kind == vocab.KindCallExecuted && e.RequestID == r2.ID {
				entries[i].Decision, entries[i].RequestID = "low", ""
			}
		}
		_, err = verify.Export(bytes.NewReader(resignExport(t, key, entries)), log.PublicKey(), verify.Options{})
		if !errors.As(err, &ve) || !strings.Contains(ve.Reason, "an execution of it relabelled low") {
			t.Fatalf("execution relabelled low: %v", err)
		}
	})
}

// verifiedExport exports the whole log and verifies it offline with every
// entry's signature checked, failing the test if it does not verify.
func verifiedExport(t *testing.T, log *audit.Log) ([]byte, verify.Summary) {
	t.Helper()
	var export bytes.Buffer
	if err := log.Export(context.Background(), &export, 0); err != nil {
		t.Fatal(err)
	}
	sum, err := verify.Export(bytes.NewReader(export.Bytes()), log.PublicKey(), verify.Options{AllSignatures: true})
	if err != nil {
		t.Fatalf("offline verify: %v\n%s", err, export.String())
	}
	return export.Bytes(), sum
}

// newLoggedFixture is a service whose recorder is the real audit log, in
// the same database, and that log's server key.
func newLoggedFixture(t *testing.T) (*fixture, *audit.Log, ed25519.PrivateKey) {
	t.Helper()
	ctx := context.Background()
	dir, db, log, key := approvaltest.OpenLog(t)
	svc, err := New(ctx, db, log, Options{RPID: "localhost", Origins: []string{testOrigin}, Approvers: testApprovers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return &fixture{svc: svc, db: db, dir: dir}, log, key
}

// loggedFixtureOn is newLoggedFixture with the service on db, of either
// dialect; the log stays in a SQLite file of its own (approvaltest) until
// audit runs on PostgreSQL.
func loggedFixtureOn(t *testing.T, db *store.DB) (*fixture, *audit.Log, ed25519.PrivateKey) {
	t.Helper()
	dir, _, log, key := approvaltest.OpenLog(t)
	svc, err := New(context.Background(), db, log, Options{RPID: "localhost", Origins: []string{testOrigin}, Approvers: testApprovers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return &fixture{svc: svc, db: db, dir: dir}, log, key
}

// ran claims an approved request and finishes it with its execution's
// record, as the guard does.
func ran(t *testing.T, svc *Service, log *audit.Log, r *Request) {
	t.Helper()
	ctx := context.Background()
	if err := svc.BeginExecution(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	args := paymentRequest().Args
	err := svc.Finish(ctx, r.ID, Outcome{State: vocab.StateExecuted, Result: json.RawMessage(`{"ok":true}`),
		Record: audit.Entry{Kind: vocab.KindCallExecuted, Agent: r.Agent, Tool: r.Tool, Args: args.JSON(),
			ArgsSHA256: args.Hex(), Decision: string(r.Level), Result: json.RawMessage(`{"ok":true}`)}})
	if err != nil {
		t.Fatal(err)
	}
}

func exportEntries(t *testing.T, export []byte) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	lines := bytes.Split(bytes.TrimSuffix(export, []byte("\n")), []byte("\n"))
	for _, line := range lines[:len(lines)-1] {
		var e audit.Entry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// resignExport is what an attacker holding the server key can do, written
// from docs/audit-export.md alone: renumber and relink the entries, hash
// them (SHA-256 of the previous hash and the RFC 8785 form of the entry
// without hash and sig), sign every hash, and sign a checkpoint over the
// RFC 6962 Merkle root.
func resignExport(t *testing.T, key ed25519.PrivateKey, entries []audit.Entry) []byte {
	t.Helper()
	var out bytes.Buffer
	var prev [32]byte
	var leaves [][32]byte
	for i, e := range entries {
		e.Seq, e.PrevHash, e.Hash, e.Sig = int64(i+1), hex.EncodeToString(prev[:]), "", ""
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		canon, err := jcs.Transform(raw)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(append(append([]byte{}, prev[:]...), canon...))
		e.Hash = hex.EncodeToString(h[:])
		e.Sig = base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, h[:]))
		enc := json.NewEncoder(&out)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(e); err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, sha256.Sum256(append([]byte{0}, h[:]...)))
		prev = h
	}
	root := merkleRoot(leaves)
	text := fmt.Sprintf("countersign\n%d\n%s\n", len(entries), base64.StdEncoding.EncodeToString(root[:]))
	vkey := audit.PublicKeyText(key.Public().(ed25519.PublicKey))
	parts := strings.SplitN(vkey, "+", 3)
	signer, err := note.NewSigner("PRIVATE+KEY+" + parts[0] + "+" + parts[1] + "+" +
		base64.StdEncoding.EncodeToString(append([]byte{1}, key.Seed()...)))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := note.Sign(&note.Note{Text: text}, signer)
	if err != nil {
		t.Fatal(err)
	}
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]string{"checkpoint": string(msg)}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// merkleRoot is the RFC 6962 root of leaf hashes.
func merkleRoot(leaves [][32]byte) [32]byte {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := merkleRoot(leaves[:k]), merkleRoot(leaves[k:])
	return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
}

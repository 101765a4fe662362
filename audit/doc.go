// Package audit is Countersign's tamper-evident audit log: an append-only,
// hash-chained, signed sequence of [Entry] values in a database, with a Merkle
// tree over the entries, signed checkpoints and a JSON Lines export. The
// offline verifier is package [github.com/countersign/countersign/audit/verify];
// it and this package share the entry, its line form and hash, and the
// check of one line on its own ([CheckLines], which [Open] also runs over
// the stored log). docs/audit-export.md is the auditor's version of this
// comment.
//
// # Entries
//
// Entries are numbered from seq 1 without gaps. Append sets Seq, Time (RFC
// 3339, UTC, nanoseconds), PrevHash, Hash and Sig:
//
//	hash = SHA-256( prev_hash || JCS(entry without "hash" and "sig") )
//	sig  = Ed25519(server key, hash)
//
// prev_hash is the previous entry's hash as 32 raw bytes (32 zero bytes before
// seq 1); JCS is RFC 8785 canonical JSON. In the entry itself prev_hash and
// hash are lowercase hex, sig is base64url without padding.
//
// # Merkle tree and checkpoints
//
// The hash of entry seq is record seq-1 of a tlog Merkle tree (RFC 6962
// hashing, [golang.org/x/mod/sumdb/tlog]): leaf = SHA-256(0x00 || hash bytes).
// A checkpoint is a C2SP tlog-checkpoint signed note:
//
//	countersign
//	<tree size, decimal>
//	<root hash, standard base64>
//
//	— countersign <base64 signature>
//
// signed with the server key, whose public form is the note verifier key
// "countersign+<keyhash>+<base64 key>" ([PublicKeyText]).
//
// # Export
//
// [Log.Export] writes one entry per line, as stored (compact JSON, fields in
// [Entry] order), then one final line {"checkpoint":"<note text>"} whose tree
// size equals the last seq exported. Between the entries and that line,
// each C2SP witness's newest cosigned checkpoint ([Log.StoreWitnessed]) is
// one line {"witnessed":"<note with cosignature>","proof":[...]} with the
// consistency proof from its tree to the final one; verify.Export checks the
// cosignatures against verify.Options.WitnessKeys. verify.Export checks such a file offline,
// including each approver's WebAuthn assertion against the action digest of
// package digest and the key from the approver's enrollment entry.
//
// # Formats and requirements
//
// Append writes format [Format] (3): format 2 with a call's arguments
// stored once and reasons and results bounded to [MaxText] bytes (see
// [Bound]); format 2 entries still verify. In format 2 every entry
// carries "v", JSON
// members are stored in RFC 8785 form, approval.requested records the
// requirement as fields (level, quorum, eligible, user_verification,
// expires_at), key decisions record decided_at, and approval.approved
// lists its approvers and the seqs of their approval.assertion entries.
// verify.Export replays format 2 entries and refuses an export in which a
// countersigned action ran without what its request required (see
// verify/requirements.go). [Log.LoadPolicy] records the policy in force
// (policy.loaded) and every later decision names it in policy_sha256, so
// that verify.Options.ReplayPolicy can check decisions against it.
// A batch approval (one assertion over several requests, verify/batch.go) is
// recorded as format 2 with batchable on approval.requested and
// batch_digests and batch_position on each approval.assertion; logs
// without batches are unchanged by it.
// Format 1 entries (no "v") are still read: their chain,
// checkpoint and assertions are checked, but they record no requirement,
// and a log never returns to format 1 once format 2 began.
//
// # Signatures
//
// An entry's sig or the checkpoint's signature is valid exactly when
// crypto/ed25519's Verify accepts it ([ValidSig]). verify.Export authenticates the entries of
// a complete export through the signed checkpoint (every entry hash is a
// leaf under its root). Exports carry no entry sig ([ExportLine]); the
// stored sig is checked on the tail after the last checkpoint, and on
// every line of an older export that carries one.
//
// # Storage
//
// A [Backend] stores the chain: one transaction per batch of appends that
// holds the chain's end against every other writer, so that several
// processes, or servers, append to one chain. Open's own keeps it in the
// SQLite database it is given (the last entry is the head; the store's
// BEGIN IMMEDIATE is the lock); package auditpg keeps it in PostgreSQL
// behind one locked head row. An entry's time is never before the time of
// the entry it follows, whatever the appending server's clock says.
package audit

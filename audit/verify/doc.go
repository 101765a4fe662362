// Package verify is Countersign's offline verifier: it checks an export of
// the audit log (package audit, format in docs/audit-export.md) with
// nothing but the export, the server's public key and, if the auditor
// wants them, a previous export, trusted witness keys, attestation roots
// and a policy engine. It imports audit for the entry and its line form,
// never the server, its database or its configuration; audit never
// imports it. An auditor reading this package reads everything that is
// checked.
//
// # What Export proves
//
// [Export] reads the export line by line, at most [MaxLine] bytes a
// line, and refuses it at the first problem with an [*Error] naming the
// seq and the reason. In order:
//
//  1. Each line on its own ([audit.CheckLines], on every core): one JSON
//     entry in its one canonical form (fields in order, compact, no
//     unknown or repeated field), format 1, 2 or 3, hash = SHA-256(
//     prev_hash || JCS(entry without hash and sig)), no sig or a
//     valid one (exports before issue 27 carry it), and the rules of its
//     format on its own: args match args_sha256, reasons and results
//     bounded as [audit.Bound] leaves them (format 3).
//  2. The chain (stream.go): seqs from 1 without gap, each prev_hash the
//     hash before, an export --since placed on a previous export's tree.
//  3. The log's rules, replayed in order (state.go): formats never go
//     back; keys enrolled, revoked, and every approval.assertion or
//     approval.denied a valid WebAuthn assertion over the action digest
//     (package digest) with a key enrolled before and not revoked
//     (assertion.go); requests, decisions, quorums and executions
//     (requirements.go), batch approvals (batch.go), standing grants and
//     the calls they let through (grant.go), where each call's arguments
//     are stored (format 3), policy links and, with
//     [Options.ReplayPolicy], each decision against its policy, and, with
//     [Options.AttestationRoots], each enrolled key's attestation.
//  4. The final line {"checkpoint":"<note>"}: a C2SP checkpoint signed by
//     the server key whose tree size is the last seq and whose root is the
//     RFC 6962 Merkle root of the entry hashes. This authenticates every
//     entry: see [Export].
//  5. Witnessed lines (witness.go): each a server-signed checkpoint proven
//     a prefix of the final one; with [Options.WitnessKeys], the quorum's
//     cosignatures.
//  6. With [Options.Previous]: the previous export (or bare checkpoint)
//     verified the same way, identical where the two overlap, and a tlog
//     consistency proof from its checkpoint to this one.
//
// A signature, of an entry or of a checkpoint, is valid exactly when
// crypto/ed25519's Verify accepts it ([audit.ValidSig]).
package verify

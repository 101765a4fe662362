package verify

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
	"golang.org/x/mod/sumdb/tlog"
)

// prunedRule checks an audit.pruned entry (audit archive): its result
// names an archive of entries before it, and, when this export's tree
// holds them (it extends a previous export), the archive's root is
// theirs. It returns why the entry is refused, or "".
func (s *stream) prunedRule(e *audit.Entry) string {
	if e.Kind != vocab.KindAuditPruned {
		return ""
	}
	var r struct {
		Through int64  `json:"archived_through"`
		SHA256  string `json:"archive_sha256"`
		Root    string `json:"archive_root"`
	}
	dec := json.NewDecoder(bytes.NewReader(e.Result))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return "audit.pruned: result is not {archived_through, archive_sha256, archive_root}: " + err.Error()
	}
	if r.Through < 1 || r.Through >= e.Seq {
		return fmt.Sprintf("audit.pruned: archived_through %d is not an entry before this one", r.Through)
	}
	if !lowerHex32(r.SHA256) {
		return "audit.pruned: archive_sha256 is not 64 lowercase hex digits"
	}
	if !lowerHex32(r.Root) {
		return "audit.pruned: archive_root is not 64 lowercase hex digits"
	}
	if s.tree != nil {
		root, err := tlog.TreeHash(r.Through, s.tree)
		if err == nil && hex.EncodeToString(root[:]) != r.Root {
			return fmt.Sprintf("audit.pruned: archive_root is not the Merkle root of entries 1 to %d", r.Through)
		}
	}
	return ""
}

func lowerHex32(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == 32 && hex.EncodeToString(b) == s
}

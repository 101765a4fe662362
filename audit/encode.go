package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/countersign/countersign/digest"
	"github.com/gowebpki/jcs"
)

// prepared is an entry's encoding without the fields the writer sets
// (seq, time, prev_hash, hash, sig). It gives the same bytes as
// chainHash and encodeLine, which stay the reference (CheckLines uses them).
type prepared struct {
	members [][]byte // JCS members `"key":value`, sorted, writer fields left out
	middle  []byte   // the stored line between `"time":"…"` and `,"prev_hash"`
}

const (
	linePrefix = `{"seq":0,"time":""`
	lineSuffix = `,"prev_hash":""}`
)

// prepareEncoding encodes e; inLineForm says its JSON members were put
// in their line form (lineJSON) already.
func prepareEncoding(e *Entry, inLineForm bool) (*prepared, error) {
	c := *e
	c.Seq, c.Time, c.PrevHash, c.Hash, c.Sig = 0, "", "", "", ""
	// prepare has put the JSON members in their line form (lineJSON);
	// without a \u2028 or \u2029 escape that is already their RFC 8785
	// form, and a second pass over them is spared.
	canon := jcs.Transform
	if inLineForm && !escapesSeparators(c.Args, c.Result, c.AuthorizationDetails, c.Policy, c.Usage) {
		canon = alreadyCanonical
	}
	members, err := membersOf(&c, canon)
	if err != nil {
		return nil, err
	}
	p := &prepared{members: members}
	if inLineForm {
		if middle, ok := lineMiddle(members); ok {
			p.middle = middle
			return p, nil
		}
	}
	line, err := encodeLine(&c)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(line, []byte(linePrefix)) || !bytes.HasSuffix(line, []byte(lineSuffix)) {
		return nil, errors.New("unexpected entry encoding")
	}
	p.middle = line[len(linePrefix) : len(line)-len(lineSuffix)]
	return p, nil
}

// lineMiddle is the stored line's middle built from the hashed members,
// so an entry's bytes are encoded once: for entries whose JSON members
// prepare has put in their line form, of valid UTF-8 and without
// U+2028 or U+2029 (nearly all), encoding/json writes each member exactly
// as RFC 8785 does, and only their order differs (Entry's field order on
// the line, key order in the hash). It reports false for the rest, which
// encodeLine writes. A raw U+FFFD may stand for invalid UTF-8 that
// encoding/json would write as \ufffd: such members take encodeLine too.
func lineMiddle(members [][]byte) ([]byte, bool) {
	// Each member goes to its field's slot; the slots read in order are
	// the line's order. Entry has fewer fields than slots; a field past
	// them would take encodeLine.
	var slots [64][]byte
	size := 0
	for _, m := range members {
		if bytes.Contains(m, []byte("\u2028")) || bytes.Contains(m, []byte("\u2029")) || bytes.Contains(m, []byte("\uFFFD")) {
			return nil, false
		}
		i, ok := lineOrder[string(memberKey(m))]
		if !ok || i >= len(slots) || slots[i] != nil {
			return nil, false
		}
		slots[i] = m
		size += 1 + len(m)
	}
	middle := make([]byte, 0, size)
	for _, m := range slots {
		if m != nil {
			middle = append(append(middle, ','), m...)
		}
	}
	return middle, true
}

// lineOrder is each JSON key's place on a stored line: Entry's field
// order, which encoding/json follows. It is read, never written, after
// start.
var lineOrder = func() map[string]int {
	order := map[string]int{}
	typ := reflect.TypeOf(Entry{})
	for i := range typ.NumField() {
		key, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		order[key] = i
	}
	return order
}()

// alreadyCanonical is membersOf's canon for members known to be in RFC
// 8785 form already.
func alreadyCanonical(m []byte) ([]byte, error) { return m, nil }

// escapesSeparators reports whether any of ms holds the \u2028 or \u2029
// escape lineJSON writes.
func escapesSeparators(ms ...json.RawMessage) bool {
	for _, m := range ms {
		if bytes.Contains(m, []byte(`\u2028`)) || bytes.Contains(m, []byte(`\u2029`)) {
			return true
		}
	}
	return false
}

// hash is chainHash for the entry with seq, time and prev_hash set.
func (p *prepared) hash(prev [32]byte, seq int64, time string) [32]byte {
	writer := [3][]byte{ // in key order
		append(append([]byte(`"prev_hash":"`), hexString(prev[:])...), '"'),
		strconv.AppendInt([]byte(`"seq":`), seq, 10),
		append(append([]byte(`"time":"`), time...), '"'),
	}
	h := sha256.New()
	h.Write(prev[:])
	h.Write([]byte{'{'})
	w, first := 0, true
	emit := func(m []byte) {
		if !first {
			h.Write([]byte{','})
		}
		first = false
		h.Write(m)
	}
	for _, m := range p.members {
		for w < len(writer) && bytes.Compare(memberKey(writer[w]), memberKey(m)) < 0 {
			emit(writer[w])
			w++
		}
		emit(m)
	}
	for ; w < len(writer); w++ {
		emit(writer[w])
	}
	h.Write([]byte{'}'})
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// line is encodeLine for the finished entry e.
func (p *prepared) line(e *Entry) []byte {
	b := make([]byte, 0, len(p.middle)+256)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, e.Seq, 10)
	b = append(b, `,"time":"`...)
	b = append(b, e.Time...)
	b = append(b, '"')
	b = append(b, p.middle...)
	b = append(b, `,"prev_hash":"`...)
	b = append(b, e.PrevHash...)
	b = append(b, `","hash":"`...)
	b = append(b, e.Hash...)
	b = append(b, `","sig":"`...)
	b = append(b, e.Sig...)
	return append(b, `"}`...)
}

// memberKey is the key of a member `"key":value`; Entry's keys are plain
// ASCII, so byte order is JCS's UTF-16 order.
func memberKey(m []byte) []byte {
	end := bytes.IndexByte(m[1:], '"')
	if end < 0 {
		return nil
	}
	return m[1 : 1+end]
}

func hexString(b []byte) []byte { return hex.AppendEncode(nil, b) }

// parallel runs f(0..n-1) on every core.
func parallel(n int, f func(int)) {
	workers := min(runtime.GOMAXPROCS(0), n/8+1)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				f(i)
			}
		})
	}
	wg.Wait()
}

// entryKeys are the JSON keys of Entry that membersOf writes, less
// the writer's; a test holds it to Entry's fields.
var entryKeys = []string{
	"v", "kind", "agent", "tool", "args", "args_redacted", "args_seq", "args_sha256", "decision", "level", "rule", "usage",
	"policy_sha256", "policy", "reason", "reason_sha256", "reason_size",
	"request_id", "quorum", "eligible", "user_verification", "approvers", "assertions",
	"batchable", "result", "result_sha256", "result_size", "approver", "credential_id", "public_key", "previous_key", "attestation_object", "authorization_details",
	"display", "nonce", "expires_at", "decided_at", "origin", "rp_id", "user_verified", "authenticator_data",
	"client_data_json", "signature", "batch_digests", "batch_position",
	"grant_id", "grant_seq", "grant_condition", "grant_max_calls", "grant_expires_at",
	"interrupted_seq",
	"idp_issuer", "idp_subject", "idp_email", "idp_auth_time", "idp_groups",
}

// membersOf is the RFC 8785 form of e's members other than seq, time,
// prev_hash, hash and sig, sorted by key, as jcs.Transform of
// json.Marshal(e) would give them, without parsing anything but the raw
// JSON fields. canon puts a JSON member in RFC 8785 form; a caller that
// has checked they already are in it passes them through.
func membersOf(e *Entry, canon func([]byte) ([]byte, error)) ([][]byte, error) {
	var out [][]byte
	member := func(key string) []byte { return append(append([]byte{'"'}, key...), '"', ':') }
	str := func(key, v string) {
		if v != "" {
			out = append(out, appendJCSString(member(key), v))
		}
	}
	raw := func(key string, v json.RawMessage) error {
		if len(v) == 0 {
			return nil
		}
		c, err := canon(v)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, append(member(key), c...))
		return nil
	}
	boolean := func(key string, v bool) {
		if v {
			out = append(out, append(member(key), "true"...))
		}
	}
	// Integers below 2^53 are their decimal digits in JCS.
	integer := func(key string, v int64) {
		if v != 0 {
			out = append(out, strconv.AppendInt(member(key), v, 10))
		}
	}
	strs := func(key string, vs []string) { out = appendList(out, member(key), vs, appendJCSString) }
	ints := func(key string, vs []int64) {
		out = appendList(out, member(key), vs, func(b []byte, v int64) []byte { return strconv.AppendInt(b, v, 10) })
	}
	// In key order, so the sort below is only a check.
	str("agent", e.Agent)
	str("approver", e.Approver)
	strs("approvers", e.Approvers)
	if err := raw("args", e.Args); err != nil {
		return nil, err
	}
	boolean("args_redacted", e.ArgsRedact)
	integer("args_seq", e.ArgsSeq)
	str("args_sha256", e.ArgsSHA256)
	ints("assertions", e.Assertions)
	str("attestation_object", e.AttestationObject)
	str("authenticator_data", e.AuthenticatorData)
	if err := raw("authorization_details", e.AuthorizationDetails); err != nil {
		return nil, err
	}
	strs("batch_digests", e.BatchDigests)
	integer("batch_position", int64(e.BatchPosition))
	boolean("batchable", e.Batchable)
	str("client_data_json", e.ClientDataJSON)
	str("credential_id", e.CredentialID)
	str("decided_at", e.DecidedAt)
	str("decision", e.Decision)
	str("display", e.Display)
	strs("eligible", e.Eligible)
	str("expires_at", e.ExpiresAt)
	str("grant_condition", e.GrantCondition)
	str("grant_expires_at", e.GrantExpiresAt)
	str("grant_id", e.GrantID)
	integer("grant_max_calls", int64(e.GrantMaxCalls))
	integer("grant_seq", e.GrantSeq)
	str("idp_auth_time", e.IdPAuthTime)
	str("idp_email", e.IdPEmail)
	strs("idp_groups", e.IdPGroups)
	str("idp_issuer", e.IdPIssuer)
	str("idp_subject", e.IdPSubject)
	integer("interrupted_seq", e.InterruptedSeq)
	// Kind is never empty (prepare refuses that), matching its lack of omitempty.
	out = append(out, appendJCSString([]byte(`"kind":`), string(e.Kind)))
	str("level", string(e.Level))
	str("nonce", e.Nonce)
	str("origin", e.Origin)
	if err := raw("policy", e.Policy); err != nil {
		return nil, err
	}
	str("policy_sha256", e.PolicySHA256)
	str("previous_key", e.PreviousKey)
	str("public_key", e.PublicKey)
	integer("quorum", int64(e.Quorum))
	str("reason", e.Reason)
	str("reason_sha256", e.ReasonSHA256)
	integer("reason_size", e.ReasonSize)
	str("request_id", e.RequestID)
	if err := raw("result", e.Result); err != nil {
		return nil, err
	}
	str("result_sha256", e.ResultSHA256)
	integer("result_size", e.ResultSize)
	str("rp_id", e.RPID)
	str("rule", e.Rule)
	str("signature", e.Signature)
	str("tool", e.Tool)
	if err := raw("usage", e.Usage); err != nil {
		return nil, err
	}
	str("user_verification", string(e.UserVerification))
	boolean("user_verified", e.UserVerified)
	integer("v", int64(e.V))
	if byKey := func(a, b []byte) int { return bytes.Compare(memberKey(a), memberKey(b)) }; !slices.IsSortedFunc(out, byKey) {
		slices.SortFunc(out, byKey)
	}
	return out, nil
}

// appendList appends the member m holding the JSON array of vs, each
// written by each, unless vs is empty.
func appendList[T any](out [][]byte, m []byte, vs []T, each func([]byte, T) []byte) [][]byte {
	if len(vs) == 0 {
		return out
	}
	m = append(m, '[')
	for i, v := range vs {
		if i > 0 {
			m = append(m, ',')
		}
		m = each(m, v)
	}
	return append(out, append(m, ']'))
}

// appendJCSString is digest.AppendJCSString: one writer of RFC 8785
// strings for the arguments and the entries alike.
func appendJCSString(b []byte, s string) []byte { return digest.AppendJCSString(b, s) }

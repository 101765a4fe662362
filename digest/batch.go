package digest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// BatchPrefix is the domain separator of a batch challenge. It differs from
// [Prefix], so no batch challenge is ever the digest of one request.
const BatchPrefix = "countersign/batch/v1\n"

// A batch approval is one WebAuthn assertion over several requests. Its
// challenge binds the whole list:
//
//	challenge = SHA-256( "countersign/batch/v1\n" ||
//	                     count (decimal) "\n" ||
//	                     hex(d_1) "\n" || ... || hex(d_n) "\n" )
//
// where d_1 < ... < d_n are the action digests ([Compute], decision
// "approve") of the n requests, sorted bytewise (the same order as their
// lowercase hex), without repeats. A request's position in a batch is its
// index in that order, from 0. Sorting makes the challenge a function of
// the set, whatever order the approver picked the requests in; the count
// makes the list's length explicit.

// ErrBatch reports a batch list that has no challenge: empty, or with a
// digest twice.
var ErrBatch = errors.New("digest: a batch is one or more distinct action digests")

// SortBatch returns the digests in batch order. It refuses an empty list
// and repeats.
func SortBatch(digests [][32]byte) ([][32]byte, error) {
	if len(digests) == 0 {
		return nil, ErrBatch
	}
	sorted := slices.Clone(digests)
	slices.SortFunc(sorted, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return nil, ErrBatch
		}
	}
	return sorted, nil
}

// BatchChallenge returns the challenge of a batch whose digests are given
// in batch order ([SortBatch]). It refuses a list out of order, with
// repeats, or empty, rather than sort it: the offline verifier must
// refuse a recorded list that is not in the order that was signed.
func BatchChallenge(sorted [][32]byte) ([32]byte, error) {
	if len(sorted) == 0 {
		return [32]byte{}, ErrBatch
	}
	h := sha256.New()
	h.Write([]byte(BatchPrefix))
	h.Write([]byte(strconv.Itoa(len(sorted))))
	h.Write([]byte{'\n'})
	for i, d := range sorted {
		if i > 0 && bytes.Compare(sorted[i-1][:], d[:]) >= 0 {
			return [32]byte{}, fmt.Errorf("%w: digest %d is not above digest %d", ErrBatch, i, i-1)
		}
		h.Write([]byte(hex.EncodeToString(d[:])))
		h.Write([]byte{'\n'})
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

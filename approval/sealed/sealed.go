// Package sealed seals the results of approved calls while they are kept
// in the database for their agent to collect.
//
// A result (what approval_status and tasks/result hand its agent) is kept
// for a collection window after its run ended, and then erased: a
// collection window rather than "until delivered once", because an agent
// whose connection dropped as the answer was sent must be able to ask
// again, and tasks/result may be asked more than once.
//
// While it is kept, it is sealed (AES-256-GCM) with a key that is not in
// the database: the result of read_secret is the secret itself, and the
// database file, its WAL and its backups must never hold it in plain text.
// The key is derived from the server key file (DeriveKey), which lives
// beside the database with mode 0600 and is needed to start at all: a copy
// of the database alone, a backup or a support bundle, opens nothing,
// while no second key file has to be kept, backed up or lost. Whoever can
// read the server key can already sign log entries; they gain little more.
// A Box given no key seals with a random key of its own, so its results
// can be opened only by the process that sealed them. After the server key
// is rotated (audit rotate-key), the Box also holds the keys derived from
// the retired server keys: results sealed before the rotation open until
// their window ends, and nothing new is sealed with them.
//
// A sealed result is
//
//	"csr1" || keep-until (8 bytes, big-endian Unix nanoseconds) ||
//	nonce (12 bytes) || AES-256-GCM ciphertext
//
// with the request id and the first 12 bytes as additional data, so a
// sealed result can be neither moved to another request nor kept longer.
// Anything else (a plain result an older version wrote) is treated as
// expired: never opened.
package sealed

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// DefaultTTL is how long a result is kept when nobody says.
const DefaultTTL = time.Hour

var sealedMagic = []byte("csr1")

// HeaderLen is how many leading bytes of a sealed result KeptUntil reads.
const HeaderLen = 4 + 8 // magic and keep-until

const resultKeyInfo = "countersign/approval-result/v1"

// DeriveKey returns the key results are sealed with at rest:
// HKDF-SHA256(server key seed, info "countersign/approval-result/v1").
// Knowing it reveals nothing about the server key.
func DeriveKey(server ed25519.PrivateKey) ([]byte, error) {
	if len(server) != ed25519.PrivateKeySize {
		return nil, errors.New("approval: server key is not an Ed25519 private key")
	}
	return hkdf.Key(sha256.New, server.Seed(), nil, resultKeyInfo, 32)
}

// Box seals results with one key and opens them with it or a retired one.
type Box struct {
	aead    cipher.AEAD
	retired []cipher.AEAD
}

// NewBox returns a Box sealing with key (32 bytes), or with a random key
// for this process alone when key is nil, and opening with key or any of
// retired (the keys of rotated-away server keys, DeriveKey).
func NewBox(key []byte, retired ...[]byte) (*Box, error) {
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	b := &Box{aead: aead}
	for _, k := range retired {
		a, err := newAEAD(k)
		if err != nil {
			return nil, fmt.Errorf("retired %w", err)
		}
		b.retired = append(b.retired, a)
	}
	return b, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("approval: result key has %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func resultAD(id string, header []byte) []byte {
	return append([]byte("countersign/result/v1\n"+id+"\n"), header...)
}

// Seal seals a run's result for request id, to be kept until until. An
// empty result is nil.
func (b *Box) Seal(id string, plain []byte, until time.Time) ([]byte, error) {
	if len(plain) == 0 {
		return nil, nil
	}
	out := make([]byte, HeaderLen, HeaderLen+b.aead.NonceSize()+len(plain)+b.aead.Overhead())
	copy(out, sealedMagic)
	binary.BigEndian.PutUint64(out[4:], uint64(until.UnixNano()))
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return b.aead.Seal(out, nonce, plain, resultAD(id, out[:HeaderLen])), nil
}

// KeptUntil reads when a stored result is to be erased; ok is false for
// anything that is not a sealed result.
func KeptUntil(stored []byte) (time.Time, bool) {
	if len(stored) < HeaderLen || !bytes.Equal(stored[:4], sealedMagic) {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(stored[4:HeaderLen]))).UTC(), true
}

// Open returns request id's stored result while its window lasts at now,
// and when the window ends (zero if unknown). A result past its window,
// sealed with another key, or not sealed at all, is nil.
func (b *Box) Open(id string, stored []byte, now time.Time) ([]byte, time.Time) {
	until, ok := KeptUntil(stored)
	if !ok || !now.Before(until) {
		return nil, until
	}
	n := b.aead.NonceSize()
	if len(stored) < HeaderLen+n {
		return nil, until
	}
	nonce, box, ad := stored[HeaderLen:HeaderLen+n], stored[HeaderLen+n:], resultAD(id, stored[:HeaderLen])
	plain, err := b.aead.Open(nil, nonce, box, ad)
	for _, r := range b.retired {
		if err == nil {
			break
		}
		plain, err = r.Open(nil, nonce, box, ad)
	}
	if err != nil {
		return nil, until
	}
	return plain, until
}

package approval

import (
	"bytes"
	"context"
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

// The result of an approved call (what approval_status and tasks/result
// hand its agent) is kept in approval_requests.result for the agent to
// collect, for Options.ResultTTL after the run ended, and then erased: a
// collection window rather than "until delivered once", because an agent
// whose connection dropped as the answer was sent must be able to ask
// again, and tasks/result may be asked more than once.
//
// While it is kept, it is sealed (AES-256-GCM) with a key that is not in
// the database: the result of read_secret is the secret itself, and the
// database file, its WAL and its backups must never hold it in plain text.
// The key is derived from the server key file (DeriveResultKey), which
// lives beside the database with mode 0600 and is needed to start at all:
// a copy of the database alone, a backup or a support bundle, opens
// nothing, while no second key file has to be kept, backed up or lost.
// Whoever can read the server key can already sign log entries; they gain
// little more. A service given no key seals with a random key of its own,
// so its results can be collected only from the process that ran them.
//
// A sealed result is
//
//	"csr1" || keep-until (8 bytes, big-endian Unix nanoseconds) ||
//	nonce (12 bytes) || AES-256-GCM ciphertext
//
// with the request id and the first 12 bytes as additional data, so a
// sealed result can be neither moved to another request nor kept longer.
// Anything else in the column (a plain result an older version wrote) is
// treated as expired: never shown, and erased by the sweep.

// DefaultResultTTL is Options.ResultTTL when unset.
const DefaultResultTTL = time.Hour

// resultSweep is how often results past their window are erased.
const resultSweep = 30 * time.Second

var sealedMagic = []byte("csr1")

const sealedHeader = 4 + 8 // magic and keep-until

const resultKeyInfo = "countersign/approval-result/v1"

// DeriveResultKey returns the key results are sealed with at rest:
// HKDF-SHA256(server key seed, info "countersign/approval-result/v1").
// Knowing it reveals nothing about the server key.
func DeriveResultKey(server ed25519.PrivateKey) ([]byte, error) {
	if len(server) != ed25519.PrivateKeySize {
		return nil, errors.New("approval: server key is not an Ed25519 private key")
	}
	return hkdf.Key(sha256.New, server.Seed(), nil, resultKeyInfo, 32)
}

// resultAEAD is the AEAD results are sealed with: key, or a random key for
// this process alone.
func resultAEAD(key []byte) (cipher.AEAD, error) {
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
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

// sealResult seals a run's result for request id, to be kept until until.
func (s *Service) sealResult(id string, plain []byte, until time.Time) ([]byte, error) {
	if len(plain) == 0 {
		return nil, nil
	}
	out := make([]byte, sealedHeader, sealedHeader+s.results.NonceSize()+len(plain)+s.results.Overhead())
	copy(out, sealedMagic)
	binary.BigEndian.PutUint64(out[4:], uint64(until.UnixNano()))
	nonce := make([]byte, s.results.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return s.results.Seal(out, nonce, plain, resultAD(id, out[:sealedHeader])), nil
}

// keptUntil reads when a stored result is to be erased; ok is false for
// anything that is not a sealed result.
func keptUntil(stored []byte) (time.Time, bool) {
	if len(stored) < sealedHeader || !bytes.Equal(stored[:4], sealedMagic) {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(stored[4:sealedHeader]))).UTC(), true
}

// openResult returns request id's stored result while its window lasts,
// and when the window ends (zero if unknown). A result past its window,
// sealed with another key, or not sealed at all, is nil.
func (s *Service) openResult(id string, stored []byte) ([]byte, time.Time) {
	until, ok := keptUntil(stored)
	if !ok || !s.now().Before(until) {
		return nil, until
	}
	n := s.results.NonceSize()
	if len(stored) < sealedHeader+n {
		return nil, until
	}
	plain, err := s.results.Open(nil, stored[sealedHeader:sealedHeader+n], stored[sealedHeader+n:], resultAD(id, stored[:sealedHeader]))
	if err != nil {
		return nil, until
	}
	return plain, until
}

// sweepResults erases, every resultSweep, the results whose window ended.
func (s *Service) sweepResults(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(resultSweep)
	defer t.Stop()
	for {
		if _, err := s.EraseResults(context.Background()); err != nil {
			s.opts.Logger.Warn("approval: result sweep", "err", err)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// EraseResults erases every stored result whose collection window has
// ended, and any result not sealed (left by an older version), and
// returns how many. The sweep calls it; so may a test.
func (s *Service) EraseResults(ctx context.Context) (int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, substr(result, 1, ?) FROM approval_requests WHERE result IS NOT NULL`, sealedHeader)
	if err != nil {
		return 0, err
	}
	var ids []string
	now := s.now()
	for rows.Next() {
		var id string
		var head []byte
		if err := rows.Scan(&id, &head); err != nil {
			rows.Close()
			return 0, err
		}
		if until, ok := keptUntil(head); !ok || !now.Before(until) {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	// secure_delete overwrites the erased bytes in the page instead of
	// leaving them in its free space: a plain result an older version
	// wrote must not linger in the file after it is erased.
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA secure_delete = ON`); err != nil {
		return 0, err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA secure_delete = OFF`)
	for _, id := range ids {
		if _, err := conn.ExecContext(ctx, `UPDATE approval_requests SET result = NULL WHERE id = ?`, id); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// createResultIndex lets the sweep find the kept results without reading
// every request.
const createResultIndex = `CREATE INDEX IF NOT EXISTS approval_requests_kept_result
	ON approval_requests (id) WHERE result IS NOT NULL`

package approval

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/vocab"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"
)

// ceremonyTTL bounds how long a started ceremony can be finished.
const ceremonyTTL = 5 * time.Minute

func (s *Service) storeCeremony(ctx context.Context, kind, requestID string, enrollment []byte, decision vocab.Decision, session *webauthn.SessionData, expires time.Time) (string, error) {
	b, err := json.Marshal(session)
	if err != nil {
		return "", err
	}
	id := uuid.NewString()
	_, err = s.db.ExecContext(ctx, `INSERT INTO approval_ceremonies (id, kind, request_id, enrollment, decision, session, expires_at) VALUES (?,?,?,?,?,?,?)`,
		id, kind, requestID, enrollment, decision, b, expires.UnixNano())
	return id, err
}

// takeCeremony consumes a ceremony: it is used up by the first attempt to
// finish it, whatever the outcome.
func (s *Service) takeCeremony(ctx context.Context, id, kind, requestID string, enrollment []byte) (decision vocab.Decision, session webauthn.SessionData, err error) {
	if !validID(id) {
		return "", session, failf(ErrCeremony, "malformed ceremony id")
	}
	var raw []byte
	var expires int64
	err = s.db.QueryRowContext(ctx, `UPDATE approval_ceremonies SET used = 1
		WHERE id = ? AND kind = ? AND request_id = ? AND COALESCE(enrollment, x'') = ? AND used = 0
		RETURNING decision, session, expires_at`, id, kind, requestID, append([]byte{}, enrollment...)).Scan(&decision, &raw, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return "", session, failf(ErrCeremony, "no unused ceremony %s for this request", id)
	}
	if err != nil {
		return "", session, err
	}
	if !s.now().Before(time.Unix(0, expires)) {
		return "", session, failf(ErrCeremony, "ceremony expired")
	}
	if err := json.Unmarshal(raw, &session); err != nil {
		return "", session, fmt.Errorf("approval: stored session: %w", err)
	}
	return decision, session, nil
}

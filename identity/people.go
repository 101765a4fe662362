package identity

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
)

// People keeps, for everyone who signed in through the provider, what it
// last said of them: who they are, their groups and roles, when that was
// checked, and the refresh token that lets Countersign ask again. The
// table is shared by replicas; it holds refresh tokens, so the database
// must stay as private as the data directory (it is).
type People struct {
	db *store.DB

	// Eligible asks provider again when what it said is older than every.
	provider *Provider
	every    time.Duration
	now      func() time.Time

	// OnSuspend, when set, hears of a person the provider, asked again,
	// no longer puts in a group that grants a role (once per such
	// change), with why: the daemon records approver.suspended.
	OnSuspend func(ctx context.Context, p *Person, why string)
}

// ErrNotEligible: the provider no longer puts the person in a group that
// maps to a role (or no longer knows them).
var ErrNotEligible = errors.New("identity: not eligible to approve")

const peopleSchema = `CREATE TABLE IF NOT EXISTS identity_people (
	approver_id   TEXT PRIMARY KEY,
	issuer        TEXT NOT NULL,
	subject       TEXT NOT NULL,
	person        TEXT NOT NULL,    -- JSON of Person as last seen
	checked_at    INTEGER NOT NULL, -- unix nanoseconds the groups were last read from the provider
	refresh_token TEXT NOT NULL DEFAULT ''
)`

// OpenPeople creates the table if needed.
func OpenPeople(ctx context.Context, db *store.DB) (*People, error) {
	if err := db.CreateTables(ctx, peopleSchema); err != nil {
		return nil, fmt.Errorf("identity: people: %w", err)
	}
	return &People{db: db, now: time.Now}, nil
}

// Recheck makes Eligible ask p again about anyone whose groups it last
// said longer than every ago (identity.recheck); now is the clock (nil:
// time.Now).
func (pp *People) Recheck(p *Provider, every time.Duration, now func() time.Time) {
	pp.provider, pp.every = p, every
	if now != nil {
		pp.now = now
	}
}

// Eligible reports whether the person known by approverID may approve:
// the provider, as it said within Recheck's every (else asked again, and
// the answer kept), puts them in a group that maps to a role. ErrNotEligible
// when not (removed, ungrouped); ErrUnreachable when the provider must be
// asked and cannot be. An id of the YAML list is not its concern (nil).
func (pp *People) Eligible(ctx context.Context, approverID string) error {
	if pp == nil || !IsApproverID(approverID) {
		return nil
	}
	_, err := pp.current(ctx, approverID)
	return err
}

// MayApprove reports whether approverID may approve for approvers (a
// decision's: ids, and role:NAME for roles of the provider): listed by
// id, or a person of the provider who, as Eligible finds them now, holds
// one of the roles named. A standing grant of theirs lets calls through
// only while this holds (package guard). False when the provider cannot
// be asked (fail closed; the approval path says why).
func (pp *People) MayApprove(ctx context.Context, approverID string, approvers []string) bool {
	if slices.Contains(approvers, approverID) {
		return true
	}
	if pp == nil || !IsApproverID(approverID) {
		return false
	}
	k, err := pp.current(ctx, approverID)
	return err == nil && slices.ContainsFunc(k.Roles, func(r string) bool { return slices.Contains(approvers, "role:"+r) })
}

// current is the person as the provider says now: what it said within
// the recheck interval, else asked again and kept. ErrNotEligible when it
// puts them in no mapped group (or no longer knows them).
func (pp *People) current(ctx context.Context, approverID string) (*Known, error) {
	k, ok, err := pp.Get(ctx, approverID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s never signed in through the identity provider", ErrNotEligible, approverID)
	}
	now := pp.now()
	if pp.provider != nil && now.Sub(k.Checked) >= pp.every {
		groups, keep, err := pp.provider.Recheck(ctx, k.RefreshToken)
		if err != nil && !errors.Is(err, ErrGone) {
			return nil, err
		}
		// Gone: no groups, so no role, until they sign in again; new
		// requests no longer name them (Expand).
		had := len(k.Roles) > 0
		k.Groups, k.Roles = groups, pp.provider.RolesOf(groups)
		if rerr := pp.Remember(ctx, &k.Person, keep, now); rerr != nil {
			return nil, rerr
		}
		if had && len(k.Roles) == 0 && pp.OnSuspend != nil {
			why := "the identity provider puts them in none of the groups that grant an approver role"
			if err != nil {
				why = "the identity provider no longer knows them (" + err.Error() + ")"
			}
			pp.OnSuspend(ctx, &k.Person, why)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s (%s at %s): %v", ErrNotEligible, k.DisplayName(), k.Subject, k.Issuer, err)
		}
	}
	if len(k.Roles) == 0 {
		return nil, fmt.Errorf("%w: the identity provider puts %s (%s) in none of the groups that grant an approver role (groups: %s)",
			ErrNotEligible, k.DisplayName(), k.Subject, strings.Join(k.Groups, ", "))
	}
	return &k, nil
}

// Known is one person as People keeps them.
type Known struct {
	Person
	Checked      time.Time // when the provider last said these groups
	RefreshToken string
}

// Remember records what a sign-in (or a recheck) learnt of a person at
// checked. An empty refresh token keeps the one held.
func (pp *People) Remember(ctx context.Context, p *Person, refreshToken string, checked time.Time) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = pp.db.ExecContext(ctx, `INSERT INTO identity_people (approver_id, issuer, subject, person, checked_at, refresh_token)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (approver_id) DO UPDATE SET person = excluded.person, checked_at = excluded.checked_at,
			refresh_token = CASE WHEN excluded.refresh_token = '' THEN identity_people.refresh_token ELSE excluded.refresh_token END`,
		p.Approver(), p.Issuer, p.Subject, string(b), checked.UnixNano(), refreshToken)
	if err != nil {
		return fmt.Errorf("identity: remember %s: %w", p.Approver(), err)
	}
	return nil
}

// Get is the person known by approver id; ok is false for none.
func (pp *People) Get(ctx context.Context, approverID string) (k Known, ok bool, err error) {
	var (
		raw     string
		checked int64
	)
	err = pp.db.QueryRowContext(ctx, `SELECT person, checked_at, refresh_token FROM identity_people WHERE approver_id = ?`, approverID).
		Scan(&raw, &checked, &k.RefreshToken)
	if errors.Is(err, sql.ErrNoRows) {
		return k, false, nil
	}
	if err != nil {
		return k, false, fmt.Errorf("identity: person %s: %w", approverID, err)
	}
	if err := json.Unmarshal([]byte(raw), &k.Person); err != nil {
		return k, false, fmt.Errorf("identity: person %s: %w", approverID, err)
	}
	k.Checked = time.Unix(0, checked)
	return k, true, nil
}

// Has reports whether approverID is a person the provider signed in
// (Lookup); false for a nil People.
func (pp *People) Has(approverID string) bool {
	_, ok := pp.Lookup(approverID)
	return ok
}

// lookupTimeout bounds Lookup, which has no context to end it.
const lookupTimeout = 5 * time.Second

// Lookup is Get for an id of ApproverID's form, for callers without a
// context (a name to show, an approver to find); ok is false for any
// other id, an unknown person, an error reading them, or a nil People.
func (pp *People) Lookup(approverID string) (Known, bool) {
	if pp == nil || !IsApproverID(approverID) {
		return Known{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	k, ok, err := pp.Get(ctx, approverID)
	return k, ok && err == nil
}

// Expand turns the role:NAME entries of approvers (a decision's, where
// the policy named a role of the provider) into the people who hold the
// role as the provider last said, sorted; other entries stay. On an error
// reading them, role entries stay as they are (the approval service then
// refuses them as unknown approvers: fail closed). A nil People expands
// nothing.
func (pp *People) Expand(approvers []string) []string {
	if pp == nil || !slices.ContainsFunc(approvers, func(a string) bool { return strings.HasPrefix(a, "role:") }) {
		return approvers
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	rows, err := pp.db.QueryContext(ctx, `SELECT person FROM identity_people ORDER BY approver_id`)
	if err != nil {
		return approvers
	}
	defer rows.Close()
	var people []Person
	for rows.Next() {
		var raw string
		var p Person
		if rows.Scan(&raw) != nil || json.Unmarshal([]byte(raw), &p) != nil {
			return approvers
		}
		people = append(people, p)
	}
	if rows.Err() != nil {
		return approvers
	}
	var out []string
	for _, a := range approvers {
		role, ok := strings.CutPrefix(a, "role:")
		if !ok {
			out = append(out, a)
			continue
		}
		for _, p := range people {
			if slices.Contains(p.Roles, role) && !slices.Contains(out, p.Approver()) {
				out = append(out, p.Approver())
			}
		}
	}
	slices.Sort(out)
	return out
}

// Stamped is a key decision's entry with who its approver is at the
// provider, as it last said: issuer, subject, email, auth time and
// groups. Unchanged for an approver from mcp.yaml, or a nil People.
func (pp *People) Stamped(e audit.Entry) audit.Entry {
	k, ok := pp.Lookup(e.Approver)
	if !ok {
		return e
	}
	e.IdPIssuer, e.IdPSubject, e.IdPEmail = k.Issuer, k.Subject, k.Email
	e.IdPAuthTime = k.AuthTime.UTC().Format(time.RFC3339)
	e.IdPGroups = append([]string{}, k.Groups...)
	return e
}

package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/countersign/countersign/audit"
)

// A Remote is a witness on the network speaking the C2SP tlog-witness
// protocol (https://c2sp.org/tlog-witness), such as torchwood's
// litewitness. The server POSTs each new checkpoint to
// <URL>/add-checkpoint with the tree size the witness last cosigned and a
// consistency proof from that tree to the new one; the witness checks that
// the new tree extends everything it saw of this log (by origin) and
// returns a cosignature (https://c2sp.org/tlog-cosignature). A witness
// never goes back: once it cosigned size N, it answers every older or
// diverging tree with a conflict, so a database restored from before N is
// caught as soon as the server talks to it, even when the host lost every
// local trace of the newer tree.
//
// Cosigned checkpoints are kept in the log's database ([Store]) and carried
// by exports, where audit verify checks them against the witness keys the
// auditor trusts.
type Remote struct {
	URL string // the submission prefix; add-checkpoint is under it
	// Key is the witness's cosignature verifier key (vkey,
	// name+hash+base64): a response that does not verify with it is
	// refused, whatever the HTTP status.
	Key    string
	Client *http.Client // default: 10 s timeout
	Store  Store
	Logger *slog.Logger

	verifier *torchwood.CosignatureVerifier

	mu     sync.Mutex
	known  int64 // the witness's tree size as last learned; -1 unknown
	status Status
}

// Store is the log as a remote witness needs it; *audit.Log satisfies it.
type Store interface {
	Tree
	ConsistencyProof(ctx context.Context, m, n int64) (tlog.TreeProof, error)
	StoreWitnessed(ctx context.Context, witness string, cosigned []byte) error
	LatestWitnessed(ctx context.Context) ([]audit.Witnessed, error)
}

// Status is how far a remote witness has come.
type Status struct {
	Name        string    // the witness key's name
	URL         string    //
	Cosigned    int64     // tree size of the newest checkpoint it cosigned
	CosignedAt  time.Time // when that cosignature came back (zero: none since start)
	Latest      int64     // tree size of the newest checkpoint sent or due
	BehindSince time.Time // when the first checkpoint it has not cosigned was made; zero when caught up
	Err         error     // the last attempt's failure; nil after a success
}

// Behind is how many entries the witness has not cosigned yet.
func (s Status) Behind() int64 { return max(0, s.Latest-s.Cosigned) }

// Lag is how long the oldest checkpoint it has not cosigned has waited.
func (s Status) Lag(now time.Time) time.Duration {
	if s.BehindSince.IsZero() {
		return 0
	}
	return now.Sub(s.BehindSince)
}

// Refused reports whether the witness refused the log rather than being
// unreachable: it holds another history (a *RollbackError) or does not
// accept this log or its key (a *RefusedError). Retrying does not help;
// an operator must act.
func (s Status) Refused() bool {
	var rb *RollbackError
	var rf *RefusedError
	return errors.As(s.Err, &rb) || errors.As(s.Err, &rf)
}

// RefusedError is a witness's refusal of the log itself: it does not know
// the origin (404), the signature does not verify with the key it has for
// the log (403), or it found the request malformed (400).
type RefusedError struct {
	Witness string
	Status  int
	Body    string
}

func (e *RefusedError) Error() string {
	why := map[int]string{
		http.StatusNotFound:   "does not know this log (add its origin and the server's key to the witness)",
		http.StatusForbidden:  "refused the server's signature (the witness has another key for this log)",
		http.StatusBadRequest: "found the request malformed",
	}[e.Status]
	return fmt.Sprintf("witness %s %s: HTTP %d %s", e.Witness, why, e.Status, strings.TrimSpace(e.Body))
}

// NewRemote checks the witness's key and returns a Remote for it.
func NewRemote(url, key string, store Store, logger *slog.Logger) (*Remote, error) {
	v, err := torchwood.NewCosignatureVerifier(strings.TrimSpace(key))
	if err != nil {
		return nil, fmt.Errorf("witness key %q: %w (want the witness's cosignature vkey, name+hash+base64)", key, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Remote{URL: strings.TrimSuffix(url, "/"), Key: v.String(), Store: store, Logger: logger,
		Client: &http.Client{Timeout: 10 * time.Second}, verifier: v, known: -1}
	r.status = Status{Name: v.Name(), URL: r.URL}
	return r, nil
}

// Name is the witness key's name.
func (r *Remote) Name() string { return r.verifier.Name() }

// Status returns the witness's progress.
func (r *Remote) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Check compares the log with the newest checkpoint this witness cosigned
// that the database kept, then asks the witness itself by submitting the
// log's current checkpoint. A *RollbackError means the log does not extend
// what the witness saw; any other error means the witness could not say
// (the caller decides whether to serve without its word).
func (r *Remote) Check(ctx context.Context) error {
	ws, err := r.Store.LatestWitnessed(ctx)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if w.Witness != r.Key {
			continue
		}
		local := &File{Path: "(cosigned by " + r.Name() + ", kept in the database)"}
		if err := local.check(ctx, r.Store, &Checkpoint{Size: w.Size, Root: w.Root, Note: w.Note}); err != nil {
			return err
		}
		r.setCosigned(w.Size, time.Time{})
	}
	msg, err := r.Store.Checkpoint(ctx)
	if err != nil {
		return err
	}
	return r.Submit(ctx, msg)
}

// due notes a checkpoint of size n that the witness should cosign.
func (r *Remote) due(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Latest = max(r.status.Latest, n)
	if r.status.Latest > r.status.Cosigned && r.status.BehindSince.IsZero() {
		r.status.BehindSince = time.Now()
	}
}

func (r *Remote) setCosigned(size int64, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if size >= r.status.Cosigned {
		r.status.Cosigned, r.status.CosignedAt = size, at
	}
	r.known = max(r.known, size)
	if r.status.Latest <= r.status.Cosigned {
		r.status.BehindSince = time.Time{}
	}
}

// Submit sends the checkpoint msg (signed by the server) to the witness
// and stores the cosigned checkpoint that comes back. A conflict (409)
// names the size the witness holds: a larger one than the log's is a
// rollback; a smaller one is retried with a proof from it, per the
// protocol.
func (r *Remote) Submit(ctx context.Context, msg []byte) (err error) {
	cp, err := torchwood.ParseCheckpoint(checkpointBody(msg))
	if err != nil {
		return fmt.Errorf("witness %s: our checkpoint: %w", r.Name(), err)
	}
	r.due(cp.N)
	r.mu.Lock()
	old := max(r.known, 0)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.status.Err = err
		r.mu.Unlock()
	}()
	// Two conflicts in a row would mean the witness moved between our
	// requests: only another server signing for this log does that.
	for range 3 {
		if old > cp.N {
			return &RollbackError{Path: r.label(), Witnessed: old, Log: cp.N, Reason: fmt.Sprintf("is %d entries short of it", old-cp.N)}
		}
		body, err := r.request(ctx, old, cp.N, msg)
		if err != nil {
			return err
		}
		status, resp, err := r.post(ctx, body)
		if err != nil {
			return err
		}
		switch status {
		case http.StatusOK:
			cosigned := append(bytes.Clone(msg), resp...)
			if err := r.Store.StoreWitnessed(ctx, r.Key, cosigned); err != nil {
				return fmt.Errorf("witness %s: %w", r.label(), err)
			}
			r.setCosigned(cp.N, time.Now())
			return nil
		case http.StatusConflict:
			size, err := strconv.ParseInt(strings.TrimSpace(string(resp)), 10, 64)
			if err != nil || size < 0 {
				return fmt.Errorf("witness %s: a conflict without a tree size: %.80q", r.label(), resp)
			}
			r.mu.Lock()
			r.known = size
			r.mu.Unlock()
			old = size
			continue
		case http.StatusUnprocessableEntity:
			// The consistency proof from old failed: the witness's tree
			// of size old is not the log's.
			return &RollbackError{Path: r.label(), Witnessed: old, Log: cp.N,
				Reason: fmt.Sprintf("has a different history: the witness refused the proof that its tree of size %d is a prefix of the log", old)}
		case http.StatusNotFound, http.StatusForbidden, http.StatusBadRequest:
			return &RefusedError{Witness: r.label(), Status: status, Body: string(resp)}
		default:
			return fmt.Errorf("witness %s: HTTP %d: %.200s", r.label(), status, resp)
		}
	}
	return fmt.Errorf("witness %s: its tree size kept changing under our requests", r.label())
}

func (r *Remote) label() string { return r.Name() + " at " + r.URL }

// request is the add-checkpoint body: "old N", the consistency proof from
// N, an empty line and the signed checkpoint.
func (r *Remote) request(ctx context.Context, old, n int64, msg []byte) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	if old > 0 {
		proof, err := r.Store.ConsistencyProof(ctx, old, n)
		if err != nil {
			return nil, err
		}
		for _, h := range proof {
			fmt.Fprintf(&b, "%s\n", h)
		}
	}
	b.WriteByte('\n')
	b.Write(msg)
	return b.Bytes(), nil
}

func (r *Remote) post(ctx context.Context, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL+"/add-checkpoint", bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("witness %s: %w", r.label(), err)
	}
	resp, err := r.Client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("witness %s: %w", r.label(), err)
	}
	defer resp.Body.Close()
	// Cosignature lines are short; a witness has no reason to say more.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, nil, fmt.Errorf("witness %s: %w", r.label(), err)
	}
	return resp.StatusCode, data, nil
}

// checkpointBody is the text of a signed note, before its signatures.
func checkpointBody(msg []byte) string {
	text, _, _ := strings.Cut(string(msg), "\n\n")
	return text + "\n"
}

// Keep sends the log's newest checkpoint to the witness until ctx ends,
// asking the log for one every interval. A failed attempt is retried with
// a backoff doubling from one second up to retryMax; a witness that is
// down never holds anything up, and only the newest checkpoint is sent
// when it is back. Failures are logged once when they start and once
// when they end.
func (r *Remote) Keep(ctx context.Context, every, retryMax time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var (
		delay   time.Duration
		notTill time.Time
		failing bool
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		msg, err := r.Store.Checkpoint(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.Logger.Error("witness: cannot read the log's checkpoint", "witness", r.Name(), "err", err)
			}
			continue
		}
		size, ok := audit.CheckpointSize(msg)
		if ok {
			// Counted as due even while backing off, so the lag shows.
			r.due(size)
		}
		if time.Now().Before(notTill) {
			continue
		}
		if ok && size <= r.Status().Cosigned && r.Status().Err == nil {
			continue // already cosigned
		}
		err = r.Submit(ctx, msg)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			delay = min(max(2*delay, time.Second), retryMax)
			notTill = time.Now().Add(delay)
			if !failing {
				r.Logger.Error("witness: cannot get the checkpoint cosigned; calls go on, retrying", "witness", r.label(), "err", err)
			} else {
				r.Logger.Debug("witness: still failing", "witness", r.label(), "err", err, "retry_in", delay)
			}
			failing = true
		default:
			if failing {
				r.Logger.Info("witness: caught up", "witness", r.label(), "size", r.Status().Cosigned)
			}
			delay, failing = 0, false
		}
	}
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/metrics"
	"github.com/countersign/countersign/vocab"
	"github.com/countersign/countersign/witness"
)

// startWitness refuses a log that does not extend the witnessed
// checkpoints: the file witness's, the one each C2SP witness cosigned last
// (kept in the database) and the tree each C2SP witness holds (asked by
// submitting the current checkpoint). With --accept-rollback the loss is
// recorded, once per witness that saw it, and the server serves. The
// leader keeps every witness up to date while it leads (lead).
//
// A C2SP witness that cannot be reached at start does not stop the server
// (it would make the witness a single point of failure for every restart):
// the refusal is logged, /readyz names it, and the first answer that shows
// a rollback is logged and fails /readyz.
func (s *Stack) startWitness(ctx context.Context, c *config.Config, log *slog.Logger) error {
	rollbacks, err := s.checkWitnesses(ctx, c, log)
	if err != nil {
		return err
	}
	if len(rollbacks) > 0 && !c.Audit.AcceptRollback {
		errs := make([]error, len(rollbacks))
		for i, rb := range rollbacks {
			errs[i] = rb
		}
		return errors.Join(errs...)
	}
	for _, rb := range rollbacks {
		log.Warn("serving a rolled-back audit log, as --accept-rollback asks", "witness", rb.Path, "witnessed_size", rb.Witnessed, "log_size", rb.Log)
		if _, err := s.audit.Append(ctx, audit.Entry{Kind: vocab.KindRollbackAccepted, Reason: rb.Error()}); err != nil {
			return fmt.Errorf("recording the accepted rollback: %w", err)
		}
	}
	if s.witness != nil {
		// Witness the log as it is now: after an accepted rollback the
		// file follows the new history; on a first start it protects
		// from now on.
		msg, err := s.audit.Checkpoint(ctx)
		if err == nil {
			err = s.witness.Record(msg, len(rollbacks) > 0)
		}
		if err != nil {
			return err
		}
	}
	for _, r := range s.remotes {
		if st := r.Status(); st.Refused() {
			// A witness never forgets a tree it cosigned: it refuses this
			// log for good. /readyz fails until it is replaced.
			log.Error("this witness refuses the audit log; remove it from audit.witnesses or register the log with a fresh witness",
				"witness", r.Name(), "err", st.Err)
		}
	}
	return nil
}

// checkWitnesses asks every witness whether the log extends what it saw,
// and returns the rollbacks they found.
func (s *Stack) checkWitnesses(ctx context.Context, c *config.Config, log *slog.Logger) ([]*witness.RollbackError, error) {
	_, v, err := audit.ParsePublicKey(s.audit.PublicKey())
	if err != nil {
		return nil, err
	}
	var rollbacks []*witness.RollbackError
	check := func(err error) error {
		var rb *witness.RollbackError
		if errors.As(err, &rb) {
			rollbacks = append(rollbacks, rb)
			return nil
		}
		return err
	}
	if c.Audit.WitnessFile != "" {
		s.witness = &witness.File{Path: c.Audit.WitnessFile, Verifier: v, Earlier: s.audit.EarlierVerifiers()}
		if err := check(s.witness.Check(ctx, s.audit)); err != nil {
			return nil, err
		}
	}
	for i, wc := range c.Audit.Witnesses {
		r, err := witness.NewRemote(wc.URL, wc.Key, s.audit, log.With("component", "witness"))
		if err != nil {
			return nil, &ConfigError{fmt.Errorf("%s: audit.witnesses[%d]: %w", c.Source, i, err)}
		}
		s.remotes = append(s.remotes, r)
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = check(r.Check(cctx))
		cancel()
		if err != nil {
			log.Error("cannot check the audit log against its witness; serving without its word, /readyz says so until it answers",
				"witness", r.Name(), "url", wc.URL, "err", err)
		}
	}
	return rollbacks, nil
}

// keepWitnesses keeps every witness up to date until ctx ends (the
// leader's duties, see lead).
func (s *Stack) keepWitnesses(ctx context.Context, c *config.Config, log *slog.Logger) {
	every := c.Audit.CheckpointEvery
	if every <= 0 {
		every = time.Minute
	}
	var wg sync.WaitGroup
	if s.witness != nil {
		wg.Go(func() {
			s.witness.Keep(ctx, s.audit, every, func(err error) {
				log.Error("cannot update the audit witness; rollbacks are not caught until it works again", "file", c.Audit.WitnessFile, "err", err)
			})
		})
	}
	for _, r := range s.remotes {
		// Retries back off up to the checkpoint interval, at most a
		// minute: a witness back up is caught up within that.
		wg.Go(func() { r.Keep(ctx, every, min(every, time.Minute)) })
	}
	wg.Wait()
}

// witnessMetrics reports the C2SP witnesses' progress to the metrics.
func (s *Stack) witnessMetrics() func() []metrics.WitnessStatus {
	if len(s.remotes) == 0 {
		return nil
	}
	return func() []metrics.WitnessStatus {
		now := time.Now()
		var out []metrics.WitnessStatus
		for _, r := range s.remotes {
			st := r.Status()
			out = append(out, metrics.WitnessStatus{Name: st.Name, Cosigned: st.Cosigned, Behind: st.Behind(), Lag: st.Lag(now), Refused: st.Refused()})
		}
		return out
	}
}

// witnessFinal gives the witnesses the checkpoint Close wrote last, if
// this replica led (always, on SQLite).
func (s *Stack) witnessFinal() error {
	if s.audit == nil || s.audit.Err() != nil || !s.leading.Load() {
		return nil
	}
	var err error
	if s.witness != nil {
		// Close wrote the final checkpoint; the witness keeps it.
		msg, cerr := s.audit.Checkpoint(context.Background())
		if cerr == nil {
			cerr = s.witness.Record(msg, false)
		}
		err = cerr
	}
	if len(s.remotes) > 0 {
		// The C2SP witnesses get the final checkpoint too, if they
		// answer soon: shutting down must not wait on the network, and
		// the next start sends it anyway.
		if msg, err := s.audit.Checkpoint(context.Background()); err == nil {
			for _, r := range s.remotes {
				if r.Status().Refused() {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				r.Submit(ctx, msg)
				cancel()
			}
		}
	}
	return err
}

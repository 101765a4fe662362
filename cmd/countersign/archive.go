package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/verify"
	"github.com/spf13/cobra"
)

func newAuditArchiveCmd() *cobra.Command {
	var before, out, previous string
	cmd := &cobra.Command{
		Use:   "archive --before DATE --out FILE",
		Short: "Move the entries before a date to a verified archive file and remove them from the database",
		Long: `archive writes every entry written before DATE (RFC 3339, or YYYY-MM-DD for
midnight UTC) as an export ending with its own signed checkpoint, verifies the
written file, and only then removes those entries from the database, recording
an audit.pruned entry that names the archive's SHA-256. The tree's hashes and
the archive's checkpoint stay in the database, so later exports start after the
archive and prove they extend it: countersign audit verify EXPORT --previous
ARCHIVE --key KEY. Keep the archive: it is the only copy of those entries.

Once a log was archived, the next archive needs the earlier one, --previous
OLD-ARCHIVE: it holds that archive's entries and the newly archived ones, so
every archive is a complete export from seq 1 and the newest is the one to
keep verifying against. The last entry always stays in the database. Only the SQLite log
is archived; a PostgreSQL log is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			at, err := parseArchiveDate(before)
			if err != nil {
				return err
			}
			return withAuditLog(cmd, func(ctx context.Context, log *audit.Log) error {
				sum, err := archiveLog(ctx, log, at, out, previous)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), sum)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&before, "before", "", "archive the entries written before this date (RFC 3339 or YYYY-MM-DD, UTC) (required)")
	cmd.Flags().StringVar(&out, "out", "", "the archive file to write; must not exist (required)")
	cmd.Flags().StringVar(&previous, "previous", "", "the latest earlier archive, required once the log was archived (the new archive repeats its entries)")
	cmd.MarkFlagRequired("before")
	cmd.MarkFlagRequired("out")
	return cmd
}

func parseArchiveDate(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--before %q: want RFC 3339 (2026-01-02T15:04:05Z) or a date (2026-01-02)", s)
}

// archiveLog writes the archive, verifies the written file as an auditor
// would (against the log's public key, with the earlier archive), and
// only then prunes: nothing leaves the database that is not in a
// verified archive.
func archiveLog(ctx context.Context, log *audit.Log, before time.Time, out, previous string) (string, error) {
	if _, err := os.Stat(out); err == nil {
		return "", fmt.Errorf("archive: %s exists; an archive is never overwritten", out)
	}
	through, err := log.ArchivePoint(ctx, before)
	if err != nil {
		return "", err
	}
	pruned, err := log.PrunedThrough(ctx)
	if err != nil {
		return "", err
	}
	if through <= pruned {
		return "", fmt.Errorf("archive: no entries before %s remain in the database (archived through seq %d)", before.UTC().Format(time.RFC3339), pruned)
	}
	if pruned > 0 && previous == "" {
		return "", fmt.Errorf("archive: entries through seq %d were archived before; give that archive with --previous so the new one can be verified", pruned)
	}
	var prefix []byte
	if pruned > 0 {
		if prefix, err = archivedEntries(previous); err != nil {
			return "", err
		}
	}
	var cp []byte
	if err := writeFileAtomic(out, func(w io.Writer) (err error) {
		if _, err := w.Write(prefix); err != nil {
			return err
		}
		cp, err = log.WriteArchive(ctx, w, through)
		return err
	}); err != nil {
		return "", err
	}
	sum, digest, err := verifyArchive(out, log.PublicKey(), through)
	if err != nil {
		// Removed: a file named as an archive must be one that verifies.
		os.Remove(out)
		return "", fmt.Errorf("archive: the written archive %s does not verify, so it was removed and nothing was pruned: %w", out, err)
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		abs = out
	}
	if _, err := log.Prune(ctx, audit.Pruning{Checkpoint: cp, ArchiveSHA256: digest, Archive: abs}); err != nil {
		return "", err
	}
	return fmt.Sprintf("archived seq %d to %d to %s (sha256 %s) and removed them from the database\n%s", sum.FirstSeq, sum.LastSeq, out, digest, sum), nil
}

// archivedEntries are the entry lines of an earlier archive, all but its
// checkpoint line: a new archive starts with them, so that every archive
// is a complete export from seq 1, verified alone. Verifying the new
// archive proves they are the entries the stored chain extends.
func archivedEntries(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("archive: --previous: %w", err)
	}
	body := bytes.TrimSuffix(data, []byte{'\n'})
	i := bytes.LastIndexByte(body, '\n')
	if i < 0 || !bytes.HasPrefix(body[i+1:], []byte(`{"checkpoint"`)) {
		return nil, fmt.Errorf("archive: --previous %s is not an archive: it does not end with a checkpoint line", path)
	}
	return body[:i+1], nil
}

// verifyArchive verifies the archive file as audit verify does,
// and returns its summary and SHA-256; it must end at seq through.
func verifyArchive(path, pub string, through int64) (verify.Summary, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return verify.Summary{}, "", err
	}
	sum, err := verify.Export(bytes.NewReader(data), pub, verify.Options{})
	if err != nil {
		return sum, "", err
	}
	if sum.LastSeq != through || sum.TreeSize != through {
		return sum, "", fmt.Errorf("it ends at seq %d (tree size %d), want %d", sum.LastSeq, sum.TreeSize, through)
	}
	d := sha256.Sum256(data)
	return sum, hex.EncodeToString(d[:]), nil
}

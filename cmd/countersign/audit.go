package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/countersign/countersign/attest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/feed"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/spf13/cobra"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Export, verify and follow the signed audit log",
		Long: `The audit log is a hash chain of signed entries with signed Merkle
checkpoints. Export it, give the export and the server's public key
(countersign audit pubkey) to an auditor, who checks it offline with
countersign audit verify. The format is in docs/audit-export.md.`,
	}
	cmd.AddCommand(newAuditExportCmd(), newAuditVerifyCmd(), newAuditTailCmd(), newAuditPubkeyCmd(), newAuditKeygenCmd(), newAuditRotateKeyCmd())
	cmd.AddCommand(newAuditArchiveCmd())
	return cmd
}

// withAuditLog opens the configured database and log. A log that fails
// its startup check is still handed to fn (it can be read), and the
// tamper error is returned after fn so the command exits non-zero.
// A read-only data directory (a copy an auditor keeps) is opened
// read-only, changing nothing in it (daemon.OpenAuditReadOnly).
func withAuditLog(cmd *cobra.Command, fn func(context.Context, *audit.Log) error) error {
	c, err := loadConfigReading(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context() // cobra's Execute never leaves it nil
	open := daemon.OpenAudit
	if daemon.ReadOnlyDataDir(c) {
		open = daemon.OpenAuditReadOnly
	}
	db, log, openErr := open(ctx, c, audit.Options{Logger: warnings(cmd)})
	var tamper *audit.TamperError
	if openErr != nil && !errors.As(openErr, &tamper) {
		return openErr
	}
	defer db.Close()
	if tamper != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: %v\n", tamper)
	}
	err = fn(ctx, log)
	if cerr := log.Close(); err == nil {
		err = cerr
	}
	if err == nil && tamper != nil {
		err = tamper
	}
	return err
}

func newAuditExportCmd() *cobra.Command {
	var since int64
	var out string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the log as JSON Lines ending with a signed checkpoint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAuditLog(cmd, func(ctx context.Context, log *audit.Log) error {
				if out == "" || out == "-" {
					return log.Export(ctx, cmd.OutOrStdout(), since)
				}
				return writeFileAtomic(out, func(w io.Writer) error { return log.Export(ctx, w, since) })
			})
		},
	}
	cmd.Flags().Int64Var(&since, "since", 0, "export only entries after this seq (verify such an export with --previous)")
	cmd.Flags().StringVar(&out, "out", "", "write to this file instead of stdout")
	return cmd
}

// writeFileAtomic writes through a temporary file in the same directory,
// so a failed export never leaves a truncated file that looks complete.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".export-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func newAuditVerifyCmd() *cobra.Command {
	var keyArg, previous string
	var rootFiles, witnessArgs []string
	var witnessQuorum int
	var allSigs, replay bool
	cmd := &cobra.Command{
		Use:   "verify FILE --key PUBKEY-or-FILE",
		Short: "Check an export offline: hashes, links, signatures, checkpoint and every key assertion",
		Long: `verify needs only the export and the server's public key (the text printed by
countersign audit pubkey, or a file holding it). With --previous it also
proves that the export extends an older one, so history between the two
cannot have been rewritten. It prints a summary, or the first bad seq and
why, and exits non-zero unless everything holds. No config or database is
read.

Entries are authenticated by the export's signed checkpoint, whose Merkle
root covers every entry's hash; exports carry no entry signatures, and an
older export that does has every one checked (--all-signatures is kept for
scripts and changes nothing).

--replay-policy checks each call that ran and each approval request against
the policy the server had loaded (policy.loaded): the level, the rules named
and the approvers, quorum and user verification required. Facts a backend
supplied are not in the log, so a rule that depends on them is not held
against it; a rule the logged arguments settle is.

--attestation-roots ROOT.pem (repeatable) requires every enrolled key to carry
an attestation that verifies and chains to one of these roots, as of its
enrollment: the proof that approvals came from genuine hardware keys.

--witness-key VKEY-or-FILE (repeatable; a file holds one key a line) names the
C2SP tlog-witnesses the auditor trusts, by their cosignature keys. The export's
witnessed checkpoints must then carry cosignatures of --witness-quorum of them
(default: all), and every cosignature by one of them must verify. A witness
cosigns only a tree that extends every tree of this log it saw, so a witnessed
checkpoint is the server's word held where the server cannot take it back.

--previous also accepts a bare checkpoint, such as a witnessed one kept from an
earlier export (jq -r 'select(.witnessed).witnessed' OLD > cp.txt): the export
(complete, from seq 1) must extend it, and with --witness-key it must carry
the quorum's cosignatures.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 && !cmd.Flags().Changed("key") {
				// The most natural slip: the key given as a second argument.
				return fmt.Errorf("accepts the export as its one argument; give the public key with --key: countersign audit verify %s --key %s", args[0], args[1])
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := readPublicKey(keyArg)
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			opts := verify.Options{AllSignatures: allSigs}
			if len(rootFiles) > 0 {
				if opts.AttestationRoots, err = attest.LoadRoots(rootFiles); err != nil {
					return err
				}
			}
			if replay {
				opts.ReplayPolicy = newPolicyReplayer()
			}
			if opts.WitnessKeys, err = readWitnessKeys(witnessArgs); err != nil {
				return err
			}
			opts.WitnessQuorum = witnessQuorum
			if previous != "" {
				pf, err := os.Open(previous)
				if err != nil {
					return err
				}
				defer pf.Close()
				opts.Previous = bufio.NewReaderSize(pf, 1<<20)
			}
			summary, err := verify.Export(bufio.NewReaderSize(f, 1<<20), key, opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), summary)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyArg, "key", "", "the server's public key, or a file holding it (required)")
	cmd.Flags().StringVar(&previous, "previous", "", "an older export this one must extend")
	cmd.Flags().BoolVar(&allSigs, "all-signatures", false, "no longer changes anything: exports carry no entry signatures, and every one an older export carries is checked")
	cmd.Flags().StringArrayVar(&rootFiles, "attestation-roots", nil, "PEM file of root certificates every enrolled key's attestation must chain to (repeatable)")
	cmd.Flags().BoolVar(&replay, "replay-policy", false, "check every decision against the policy it names (policy.loaded): level, rules and approval requirement")
	cmd.Flags().StringArrayVar(&witnessArgs, "witness-key", nil, "a trusted witness's cosignature key (name+hash+base64), or a file of them one a line (repeatable)")
	cmd.Flags().IntVar(&witnessQuorum, "witness-quorum", 0, "how many of the --witness-key witnesses must have cosigned (default: all)")
	cmd.MarkFlagRequired("key")
	return cmd
}

// readWitnessKeys accepts vkeys and files of them, one a line; blank
// lines and # comments in files are skipped.
func readWitnessKeys(args []string) ([]string, error) {
	var keys []string
	for _, arg := range args {
		if strings.Count(arg, "+") >= 2 && !strings.ContainsAny(arg, " \n") {
			if _, err := os.Stat(arg); err != nil {
				keys = append(keys, arg)
				continue
			}
		}
		data, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("--witness-key %q is neither a witness key (name+hash+base64) nor a readable file: %w", arg, err)
		}
		for line := range strings.Lines(string(data)) {
			line, _, _ = strings.Cut(line, "#")
			if line = strings.TrimSpace(line); line != "" {
				keys = append(keys, line)
			}
		}
	}
	return keys, nil
}

// readPublicKey accepts the key text itself or the name of a file with it.
func readPublicKey(arg string) (string, error) {
	if _, _, err := audit.ParsePublicKey(arg); err == nil {
		return arg, nil
	}
	data, err := os.ReadFile(arg)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("--key %q is neither a public key (countersign+<hash>+<key>) nor a readable file", arg)
		}
		return "", err
	}
	if _, _, err := audit.ParsePublicKey(string(data)); err != nil {
		return "", fmt.Errorf("--key %s: %w", arg, err)
	}
	return string(data), nil
}

func newAuditTailCmd() *cobra.Command {
	var since int64
	var interval time.Duration
	var format string
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Follow new audit entries, one readable line (or OCSF event) each, until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "ocsf" {
				return fmt.Errorf("--format %q: expected text or ocsf", format)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cmd.SetContext(ctx)
			return withAuditLog(cmd, func(ctx context.Context, log *audit.Log) error {
				after := since
				if after < 0 {
					// Start with the last ten entries for context.
					last, err := log.LastSeq(ctx)
					if err != nil {
						return err
					}
					after = max(last-10, 0)
				}
				out := cmd.OutOrStdout()
				for {
					entries, err := log.Since(ctx, after, 0)
					if err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return err
					}
					if format == "ocsf" && len(entries) > 0 {
						if err := printOCSF(ctx, out, log, entries); err != nil {
							return err
						}
						after = entries[len(entries)-1].Seq
						continue
					}
					for _, e := range entries {
						fmt.Fprintln(out, humanLine(e))
						after = e.Seq
					}
					if len(entries) > 0 {
						continue
					}
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(interval):
					}
				}
			})
		},
	}
	cmd.Flags().Int64Var(&since, "since", -1, "show entries after this seq (default: the last 10)")
	cmd.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "how often to look for new entries")
	cmd.Flags().StringVar(&format, "format", "text", "text (one readable line each) or ocsf (one OCSF "+feed.OCSFVersion+" API Activity event in JSON each, with seq, hash and the signed checkpoint that covers it)")
	return cmd
}

// printOCSF writes entries as OCSF events, one JSON line each, with the
// signed checkpoint that covers them all.
func printOCSF(ctx context.Context, out io.Writer, log *audit.Log, entries []audit.Entry) error {
	cp, err := feed.CheckpointOf(ctx, log)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	for _, e := range entries {
		ev, err := feed.OCSF(e, cp)
		if err != nil {
			return err
		}
		if err := enc.Encode(ev); err != nil {
			return err
		}
	}
	return nil
}

// humanLine is one entry for a person watching: seq, time, kind, then
// the fields that are set.
func humanLine(e audit.Entry) string {
	var b strings.Builder
	t := e.Time
	if parsed, err := time.Parse(time.RFC3339Nano, e.Time); err == nil {
		t = parsed.Local().Format("2006-01-02 15:04:05.000")
	}
	fmt.Fprintf(&b, "#%-6d %s  %-20s", e.Seq, t, e.Kind)
	for _, f := range []struct{ name, value string }{
		{"agent", e.Agent}, {"tool", e.Tool}, {"decision", e.Decision}, {"level", string(e.Level)}, {"request", e.RequestID},
		{"approver", e.Approver}, {"approvers", strings.Join(e.Approvers, ",")}, {"eligible", strings.Join(e.Eligible, ",")},
		{"rule", e.Rule}, {"display", e.Display}, {"reason", e.Reason},
	} {
		if f.value != "" {
			fmt.Fprintf(&b, " %s=%q", f.name, f.value)
		}
	}
	if e.InterruptedSeq != 0 {
		fmt.Fprintf(&b, " settles=#%d", e.InterruptedSeq) // the call.interrupted a finding is about
	}
	if e.ArgsRedact {
		b.WriteString(" args=(redacted)")
	} else if len(e.Args) > 0 {
		args := string(e.Args)
		if len(args) > 120 {
			args = args[:117] + "..."
		}
		fmt.Fprintf(&b, " args=%s", args)
	} else if e.ArgsSeq != 0 {
		fmt.Fprintf(&b, " args=(as in #%d)", e.ArgsSeq) // stored once, in the call's call.allowed
	}
	return b.String()
}

func newAuditPubkeyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "pubkey",
		Short: "Print the server's public key for audit verify --key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfigReading(cmd)
			if err != nil {
				return err
			}
			key, release, err := daemon.ServerSigner(c)
			if err != nil {
				return err
			}
			defer release()
			fmt.Fprintln(cmd.OutOrStdout(), audit.PublicKeyText(key.Public().(ed25519.PublicKey)))
			return nil
		},
	}
}

// newAuditKeygenCmd makes the one server key replicas on PostgreSQL share:
// none of them makes a key of its own (daemon.ServerKey).
func newAuditKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Make a new server signing key (0600) for every replica to use as audit.key_file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := audit.WriteNewKey(out)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s exists; keygen never overwrites a key (the log it signs could not be extended): choose another path", out)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), audit.PublicKeyText(key.Public().(ed25519.PublicKey)))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the key to; must not exist")
	cmd.MarkFlagRequired("out")
	return cmd
}

// newAuditRotateKeyCmd hands the log to a new server key while no server
// runs (daemon.RotateKey says why offline).
func newAuditRotateKeyCmd() *cobra.Command {
	var reason string
	var to rotateTarget
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Replace the server signing key (server stopped); the log records the hand-over, signed by both keys",
		Long: `Makes a new server key and appends a key.rotated entry signed by the old
key and the new one; later entries and checkpoints are signed by the new key.
The old key file is kept as <key>.retired-<keyhash>. Auditors keep verifying
with the first key: audit verify follows the chain of keys from it. Stop the
server first; it is refused while one holds the data directory. On PostgreSQL
(store.url) stop every replica: it is refused while any runs; it writes the new
key at audit.key_file and records it in the database, and a replica started
with the old key is refused: give every replica the new file.

With --to-token and --to-key the log is handed to an Ed25519 key in a PKCS #11
token instead (made there with --generate), from the file key or from the
token key audit.pkcs11 names; then set audit.pkcs11 to it. SQLite only so far.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfigReading(cmd)
			if err != nil {
				return err
			}
			var previous, next string
			if to.Token != "" || to.Key != "" {
				previous, next, err = rotateToToken(cmd, c, to, reason)
			} else {
				previous, next, err = daemon.RotateKey(cmd.Context(), c, reason, audit.Options{Logger: warnings(cmd)})
			}
			if next != "" { // rotated, even if err says what failed after
				fmt.Fprintf(cmd.ErrOrStderr(), "rotated the server key from %s\n", previous)
				fmt.Fprintln(cmd.OutOrStdout(), next)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the key is rotated, recorded in the entry")
	to.flags(cmd)
	return cmd
}

package main

import (
	"fmt"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/spf13/cobra"
)

func newBackupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "Copy the database consistently while serve runs, and verify the copy",
		Long: `backup writes one consistent copy of the data directory's database to FILE,
while a server may be serving on it (SQLite's VACUUM INTO: writers go on), then
verifies the copy: SQLite's quick_check, the audit log's chain, tree and
checkpoint, and an export of it checked as audit verify does with the server's
public key. FILE is never overwritten, and holds nothing unless the copy
verified. The copy is one file, write-ahead log included.

The server key (server.key, or audit.key_file) is not in the copy: keep it
backed up on its own, once. To restore: stop serve, put the copy in place of
countersign.db, remove countersign.db-wal and countersign.db-shm, start serve.
A witness that saw entries written after the copy was taken reports a rollback
(README: Back up, restore, upgrade).

On PostgreSQL (store.url) use pg_dump or pg_basebackup instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfigReading(cmd)
			if err != nil {
				return err
			}
			res, err := daemon.Backup(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			if res.ArchivedThrough > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "backup %s: %d bytes, schema %d; its audit log, archived through seq %d, passed the startup check (verify its export with --previous the archive)\n",
					res.File, res.Bytes, res.Schema, res.ArchivedThrough)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup %s: %d bytes, schema %d; its audit log verifies: %s\n",
				res.File, res.Bytes, res.Schema, res.Log)
			return nil
		},
	}
}

// loadConfigReading is loadConfig for a command that only reads the data
// directory (audit export, audit pubkey, backup): a data directory that
// is there but read-only (daemon.ReadOnlyDataDir) is not a problem.
func loadConfigReading(cmd *cobra.Command) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	return checkConfig(path, func(c *config.Config, e *config.Error) bool {
		return e.Path == "server.data_dir" && daemon.ReadOnlyDataDir(c)
	})
}

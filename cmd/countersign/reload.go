package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/spf13/cobra"
)

func newReloadCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Make the running server read its configuration again (SIGHUP) and say how it went",
		Long: `Reload finds the countersign serve that holds the configured data directory
(its lock file names the process), sends it SIGHUP and waits for the outcome:
either the new configuration is in force (its policy recorded as a
policy.loaded entry), or it was refused, with the reason, and the running
configuration stays. It fails when no server holds the data directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			wait, _ := cmd.Flags().GetDuration("wait")
			dir := c.Server.DataDir
			h, err := serverHolding(dir)
			if err != nil {
				return err
			}
			p, err := os.FindProcess(h.PID)
			if err == nil {
				err = p.Signal(syscall.SIGHUP)
			}
			if err != nil {
				return fmt.Errorf("signalling countersign serve (pid %d): %w", h.PID, err)
			}
			outcome, err := reloadOutcome(dir, h.Reloads, wait)
			if err != nil {
				return fmt.Errorf("sent SIGHUP to countersign serve (pid %d): %w; its log says more", h.PID, err)
			}
			if outcome != "reloaded" {
				return fmt.Errorf("countersign serve (pid %d): %s", h.PID, outcome)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "countersign serve (pid %d) reloaded %s\n", h.PID, c.Source)
			return nil
		},
	}
	cmd.Flags().Duration("wait", 30*time.Second, "how long to wait for the server to say how the reload went")
	return cmd
}

// serverHolding is what the server holding dir wrote into its lock file.
// Taking the lock ourselves means none does.
func serverHolding(dir string) (*store.Holder, error) {
	l, err := store.LockDir(dir, store.Holder{PID: os.Getpid(), Since: time.Now().UTC()})
	if err == nil {
		l.Close()
		return nil, fmt.Errorf("no countersign serve holds the data directory %s: nothing to reload", dir)
	}
	var inUse *store.InUseError
	switch {
	case !errors.As(err, &inUse):
		return nil, err
	case inUse.Holder == nil:
		return nil, fmt.Errorf("the countersign serve holding %s is still starting; try again", dir)
	}
	return inUse.Holder, nil
}

// reloadOutcome waits until the lock file counts more than before
// reloads, and returns what the last one says.
func reloadOutcome(dir string, before int, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		var h store.Holder
		if b, err := os.ReadFile(filepath.Join(dir, store.LockFile)); err == nil && json.Unmarshal(b, &h) == nil && h.Reloads > before {
			return h.Reload, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no outcome within %s", wait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

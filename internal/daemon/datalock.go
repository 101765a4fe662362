package daemon

import (
	"net"
	"os"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
)

// dataLock is serve's hold on its data directory (store.LockDir). Only
// serve takes it: the other commands (approvers, audit, agents …) open the
// same database beside a running server, as they always could.
type dataLock struct {
	*store.DirLock
	holder store.Holder
}

// lockDataDir creates the data directory if needed and locks it, or says
// which process holds it.
func lockDataDir(c *config.Config) (*dataLock, error) {
	if err := c.EnsureDataDir(); err != nil {
		return nil, err
	}
	h := store.Holder{PID: os.Getpid(), Since: time.Now().UTC().Truncate(time.Second)}
	l, err := store.LockDir(c.Server.DataDir, h)
	if err != nil {
		return nil, err
	}
	return &dataLock{DirLock: l, holder: h}, nil
}

// Listening adds the listeners' addresses to what the lock file says, so
// that whoever is refused knows which server to stop.
func (l *dataLock) Listening(page net.Addr, agents net.Listener) error {
	l.holder.Listen = []string{"approver page " + page.String()}
	if agents != nil {
		l.holder.Listen = append(l.holder.Listen, "agents "+agents.Addr().String())
	} else {
		l.holder.Listen = append(l.holder.Listen, "agents on stdio")
	}
	return l.Update(l.holder)
}

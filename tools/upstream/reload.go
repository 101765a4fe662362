package upstream

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/countersign/countersign/config"
)

// A reload changes the upstreams in place, in two steps, so that a
// configuration is taken whole or not at all: Prepare starts every
// upstream the new configuration adds or changes (command, args, env, url,
// headers, prefix, anything of its entry) and reads its tools, touching
// neither the pins nor the catalog, and fails, naming each, when any of
// them cannot start; Commit then puts them in force. An upstream that is
// removed or replaced is retired: its tools leave the catalog (or are
// replaced by its successor's, under the same pins), a new call to it is
// refused, and its process or connection closes once the calls under way
// have their answers. Upstreams the configuration leaves as they were
// keep their connection.

// Reload is a change of upstreams that Prepare made ready: Commit puts it
// in force, Abort drops it. One of them must be called.
type Reload struct {
	m       *Manager
	next    []*conn // the upstreams in force after Commit, in the configuration's order
	started []*conn // those Prepare started (added or changed)
	retired []*conn // those Commit retires (removed or changed)
}

// Prepare starts the upstreams ups adds or changes, at once and in
// parallel, each within its connect_timeout. It fails when any of them
// cannot start or list valid tools, naming each; nothing has changed then.
// Calls of one Reload at a time.
func (m *Manager) Prepare(ctx context.Context, ups []config.Upstream) (*Reload, error) {
	m.mu.Lock()
	running := map[string]*conn{}
	for _, c := range m.conns {
		running[c.cfg.Name] = c
	}
	m.mu.Unlock()
	r := &Reload{m: m}
	for _, u := range ups {
		c := m.newConn(u)
		old, ok := running[u.Name]
		if ok && reflect.DeepEqual(connection(old.cfg), connection(c.cfg)) {
			r.next = append(r.next, old)
			delete(running, u.Name)
			continue
		}
		if ok {
			r.retired = append(r.retired, old)
			delete(running, u.Name)
		}
		r.next = append(r.next, c)
		r.started = append(r.started, c)
	}
	for _, old := range running {
		r.retired = append(r.retired, old)
	}
	errs := each(r.started, func(c *conn) error {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
		defer cancel()
		session, err := c.dial(cctx)
		if err != nil {
			return fmt.Errorf("upstream %s does not start: %w", c.cfg.Name, err)
		}
		c.mu.Lock()
		c.session = session
		c.mu.Unlock()
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		r.Abort()
		return nil, err
	}
	return r, nil
}

// connection is what of u the upstream's connection and tools depend on:
// its default level, approvers and required are the policy's and the
// start's, and changing them restarts nothing.
func connection(u config.Upstream) config.Upstream {
	u.DefaultLevel, u.Approvers, u.Required = "", nil, false
	return u
}

// Changed reports whether the reload adds, changes or removes any upstream.
func (r *Reload) Changed() bool { return len(r.started)+len(r.retired) > 0 }

// Abort closes what Prepare started; the upstreams in force stay.
func (r *Reload) Abort() {
	for _, c := range r.started {
		c.close()
	}
}

// Commit puts the reload in force: the retired upstreams leave (their
// calls under way finish first), the started ones offer their tools
// against their pins and are kept connected from now on. policy is the
// new configuration's (see [Options].Policy).
func (r *Reload) Commit(policy func(exposed string) bool) {
	m := r.m
	m.policy.Store(&policy)
	for _, c := range r.retired {
		c.retire()
	}
	for _, c := range r.retired {
		if !slices.ContainsFunc(r.started, func(n *conn) bool { return n.cfg.Name == c.cfg.Name }) {
			m.cat.Replace(c.cfg.Name, nil) // no tools: cannot fail
		}
	}
	for _, c := range r.started {
		// Pinned on a first connection, compared with the pins (held if
		// they differ) otherwise, as at a start. A failure (the pins
		// unreadable) offers nothing; the keeping below lists again on
		// the next list_changed.
		if err := c.settle(m.life, true); err != nil {
			c.log.Error("upstream started by a reload offers no tools", "err", err)
		} else {
			c.log.Info("upstream started by a reload", "tools", c.offeredCount())
		}
	}
	m.mu.Lock()
	m.conns = r.next
	m.mu.Unlock()
	for _, c := range r.started {
		m.keep(c)
	}
}

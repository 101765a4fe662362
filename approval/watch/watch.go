// Package watch tells those waiting on requests that one changed, in this
// process and, on PostgreSQL, in every replica (Announce, Listen). A
// waiter takes a channel (Of one request, or Any change) that is closed at
// the next change, then reads the request again; thousands of waiters on
// different requests do not all wake whenever any one changes. Hooks
// (OnChange) let one watcher follow every request without a goroutine
// each.
package watch

import "sync"

// Hub is the change notifications of one set of requests. The zero Hub is
// not ready: use New.
type Hub struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	// watched holds, per request, a channel closed at its next change.
	watched map[string]chan struct{}
	hooks   []func(id string)
}

// New returns a Hub.
func New() *Hub {
	return &Hub{changed: make(chan struct{}), watched: map[string]chan struct{}{}}
}

// Notify wakes the waiters on the requests ids, and those on any change;
// given no ids, every waiter.
func (h *Hub) Notify(ids ...string) {
	h.mu.Lock()
	close(h.changed)
	h.changed = make(chan struct{})
	if len(ids) == 0 {
		for id := range h.watched {
			h.wake(id)
		}
	}
	for _, id := range ids {
		h.wake(id)
	}
	hooks := h.hooks
	h.mu.Unlock()
	for _, fn := range hooks {
		if len(ids) == 0 {
			fn("")
		}
		for _, id := range ids {
			fn(id)
		}
	}
}

// OnChange registers fn to be told, after each change, which request
// changed, or "" for a change that may concern any. fn runs on the
// changing goroutine and must not block.
func (h *Hub) OnChange(fn func(id string)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hooks = append(h.hooks, fn)
}

// Forget forgets request id's channel once a waiter is done with it, so
// that ended requests leave nothing behind; any other waiter on it wakes
// and reads the request again.
func (h *Hub) Forget(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.wake(id)
}

// wake closes and forgets request id's channel; h.mu is held.
func (h *Hub) wake(id string) {
	if ch, ok := h.watched[id]; ok {
		close(ch)
		delete(h.watched, id)
	}
}

// Of returns a channel closed at request id's next change (or at a change
// Notify could not attribute).
func (h *Hub) Of(id string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.watched[id]
	if !ok {
		ch = make(chan struct{})
		h.watched[id] = ch
	}
	return ch
}

// Any returns a channel closed at the next change.
func (h *Hub) Any() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

// Watched is how many requests have a waiter's channel.
func (h *Hub) Watched() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watched)
}

package approval

// notify wakes the event streams and the waiters on the requests ids,
// or, given no ids, every waiter.
func (s *Service) notify(ids ...string) {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	if len(ids) == 0 {
		for id := range s.watched {
			s.wake(id)
		}
	}
	for _, id := range ids {
		s.wake(id)
	}
	hooks := s.hooks
	s.mu.Unlock()
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
// changed, or "" for a change that may concern any. It lets one watcher
// follow thousands of requests without a goroutine each. fn runs on the
// changing goroutine and must not block.
func (s *Service) OnChange(fn func(id string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = append(s.hooks, fn)
}

// unwatch forgets request id's channel once a waiter is done with it, so
// that ended requests leave nothing behind; any other waiter on it wakes
// and reads the request again.
func (s *Service) unwatch(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wake(id)
}

// wake closes and forgets request id's channel; s.mu is held.
func (s *Service) wake(id string) {
	if ch, ok := s.watched[id]; ok {
		close(ch)
		delete(s.watched, id)
	}
}

// changesOf returns a channel closed at request id's next change (or at a
// change notify could not attribute).
func (s *Service) changesOf(id string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.watched[id]
	if !ok {
		ch = make(chan struct{})
		s.watched[id] = ch
	}
	return ch
}

// changes returns a channel closed at the next change.
func (s *Service) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

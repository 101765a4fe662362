// Package minutes keeps per-minute sums, the in-memory form of the usage
// windows a guard decides on (guard's usageBook): memory grows with the
// minutes that hold something, not with what was added.
package minutes

// Series is one key's per-minute sums, oldest first. It is not safe for
// concurrent use: its owner locks.
type Series struct {
	mins []int64
	vals []float64
}

// Add adds v to minute min.
func (s *Series) Add(min int64, v float64) {
	if n := len(s.mins); n > 0 && s.mins[n-1] == min {
		s.vals[n-1] += v
		return
	}
	// Restored entries may arrive slightly out of order: insert in place.
	i := len(s.mins)
	for i > 0 && s.mins[i-1] > min {
		i--
	}
	if i < len(s.mins) && s.mins[i] == min {
		s.vals[i] += v
		return
	}
	s.mins = append(s.mins, 0)
	s.vals = append(s.vals, 0)
	copy(s.mins[i+1:], s.mins[i:])
	copy(s.vals[i+1:], s.vals[i:])
	s.mins[i], s.vals[i] = min, v
}

// Sum adds the minutes from first on, and forgets those before horizon.
func (s *Series) Sum(first, horizon int64) float64 {
	drop := 0
	for drop < len(s.mins) && s.mins[drop] < horizon {
		drop++
	}
	if drop > 0 {
		s.mins, s.vals = s.mins[drop:], s.vals[drop:]
	}
	var total float64
	for i := len(s.mins) - 1; i >= 0 && s.mins[i] >= first; i-- {
		total += s.vals[i]
	}
	return total
}

// Empty reports whether no minute holds anything (since the last Sum's
// horizon).
func (s *Series) Empty() bool { return len(s.mins) == 0 }

package minutes

import "testing"

// Minutes added out of order are summed in place; a sum forgets the
// minutes before its horizon, and a series with nothing left is empty.
func TestSeriesSumsItsMinutesAndForgetsThoseBeforeTheHorizon(t *testing.T) {
	var s Series
	s.Add(10, 1)
	s.Add(12, 2)
	s.Add(11, 4) // late: goes between
	s.Add(12, 8)
	if got := s.Sum(11, 0); got != 14 {
		t.Fatalf("sum from minute 11: %v, want 14", got)
	}
	if got := s.Sum(0, 12); got != 10 {
		t.Fatalf("sum past a horizon at 12: %v, want 10", got)
	}
	if s.Empty() {
		t.Fatal("empty with minute 12 held")
	}
	if got := s.Sum(0, 13); got != 0 || !s.Empty() {
		t.Fatalf("past every minute: sum %v, empty %v", got, s.Empty())
	}
}

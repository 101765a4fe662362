package expiring

import (
	"testing"
	"time"
)

func TestLead(t *testing.T) {
	for lifetime, want := range map[time.Duration]time.Duration{
		2 * time.Second: 400 * time.Millisecond, 5 * time.Minute: time.Minute, time.Hour: time.Minute,
	} {
		if got := Lead(lifetime); got != want {
			t.Errorf("Lead(%s) = %s, want %s", lifetime, got, want)
		}
	}
}

package digest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func fill(b byte) [32]byte { return [32]byte(bytes.Repeat([]byte{b}, 32)) }

// Pins the format: any change to the construction must be a new version.
func TestBatchChallengeKnownAnswer(t *testing.T) {
	sorted, err := SortBatch([][32]byte{fill(3), fill(1), fill(2)})
	if err != nil {
		t.Fatal(err)
	}
	if sorted[0] != fill(1) || sorted[1] != fill(2) || sorted[2] != fill(3) {
		t.Fatalf("not sorted: %x", sorted)
	}
	c, err := BatchChallenge(sorted)
	if err != nil {
		t.Fatal(err)
	}
	// Computed independently (Python hashlib over the documented bytes).
	const want = "7872a831a7a1d9deef38f80c21158cbfb1813587c05e0226629fb4d0f2d0cf97"
	if got := hex.EncodeToString(c[:]); got != want {
		t.Fatalf("batch challenge = %s, want %s", got, want)
	}
}

func TestBatchChallengeBindsTheSet(t *testing.T) {
	three, _ := BatchChallenge([][32]byte{fill(1), fill(2), fill(3)})
	two, _ := BatchChallenge([][32]byte{fill(1), fill(2)})
	swapped, _ := BatchChallenge([][32]byte{fill(1), fill(2), fill(4)})
	for name, c := range map[string][32]byte{"a subset": two, "another member": swapped} {
		if c == three {
			t.Errorf("%s gives the same challenge", name)
		}
	}
	// A batch of one is still not the request's own digest: an assertion
	// on a single request is never a batch one, and back.
	single, _ := Compute(sample())
	if one, _ := BatchChallenge([][32]byte{single}); one == single {
		t.Error("a batch of one signs the same challenge as the request alone")
	}
}

func TestBatchRefusesWhatWasNotSigned(t *testing.T) {
	if _, err := SortBatch(nil); !errors.Is(err, ErrBatch) {
		t.Errorf("empty batch: %v", err)
	}
	if _, err := SortBatch([][32]byte{fill(1), fill(1)}); !errors.Is(err, ErrBatch) {
		t.Errorf("repeated digest: %v", err)
	}
	if _, err := BatchChallenge([][32]byte{fill(2), fill(1)}); !errors.Is(err, ErrBatch) {
		t.Errorf("list out of order: %v", err)
	}
	if _, err := BatchChallenge([][32]byte{fill(2), fill(2)}); !errors.Is(err, ErrBatch) {
		t.Errorf("list with a repeat: %v", err)
	}
}

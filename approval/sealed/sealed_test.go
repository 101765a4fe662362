package sealed

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"
)

// A sealed result opens for its own request, with its own key, while its
// window lasts; moved to another request, opened with another key, past
// its window, tampered with, or never sealed, it opens to nothing.
func TestSealedResultOpensOnlyWhereAndWhileItBelongs(t *testing.T) {
	_, server, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := DeriveKey(server)
	if err != nil {
		t.Fatal(err)
	}
	box, err := NewBox(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	until := now.Add(time.Hour)
	plain := []byte(`{"content":[{"type":"text","text":"s3cret"}]}`)
	stored, err := box.Seal("req-1", plain, until)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(stored, []byte("s3cret")) {
		t.Fatal("the sealed result holds the plain text")
	}
	if got, at := box.Open("req-1", stored, now); !bytes.Equal(got, plain) || at.UnixNano() != until.UnixNano() {
		t.Fatalf("open: %q until %v, want %q until %v", got, at, plain, until)
	}
	if kept, ok := KeptUntil(stored[:HeaderLen]); !ok || kept.UnixNano() != until.UnixNano() {
		t.Fatalf("KeptUntil of the header: %v, %v", kept, ok)
	}
	other, err := NewBox(nil)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(stored)
	tampered[len(tampered)-1] ^= 1
	for name, got := range map[string][]byte{
		"another request": first(box.Open("req-2", stored, now)),
		"another key":     first(other.Open("req-1", stored, now)),
		"past its window": first(box.Open("req-1", stored, until)),
		"tampered":        first(box.Open("req-1", tampered, now)),
		"never sealed":    first(box.Open("req-1", plain, now)),
	} {
		if got != nil {
			t.Errorf("%s: opened to %q", name, got)
		}
	}
	if empty, err := box.Seal("req-1", nil, until); err != nil || empty != nil {
		t.Errorf("an empty result sealed to %q, %v", empty, err)
	}
	if _, err := NewBox(make([]byte, 16)); err == nil {
		t.Error("a 16-byte key was taken")
	}
}

func first(b []byte, _ time.Time) []byte { return b }

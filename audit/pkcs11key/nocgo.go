//go:build !cgo

package pkcs11key

import (
	"crypto"
	"io"
)

// Key is a token's key; a build without cgo never has one.
type Key struct{}

// Open refuses: see ErrNoCgo.
func Open(module, token, pin, label string) (*Key, error) { return nil, ErrNoCgo }

// Generate refuses: see ErrNoCgo.
func Generate(module, token, pin, label string) (*Key, error) { return nil, ErrNoCgo }

func (k *Key) Public() crypto.PublicKey { return nil }

func (k *Key) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, ErrNoCgo }

func (k *Key) Close() error { return nil }

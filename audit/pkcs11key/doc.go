// Package pkcs11key is an audit.Signer whose Ed25519 key stays in a
// PKCS #11 token (an HSM, SoftHSM): the server asks the token to sign and
// never holds the private key.
package pkcs11key

import "errors"

// The module is a C library loaded at run time (through
// github.com/miekg/pkcs11), so the token needs a cgo build; a static
// CGO_ENABLED=0 build (the release binaries, the container image) has
// the same API, whose Open and Generate refuse with ErrNoCgo
// (nocgo.go), and signs with a key file.

// ErrNoToken is returned by Open and Generate when no slot holds a token
// with the label asked for (a wrong label, or the token removed).
var ErrNoToken = errors.New("pkcs11: no such token")

// ErrNoKey is returned by Open when the token holds no key by that label.
var ErrNoKey = errors.New("no such key")

// ErrNoCgo is returned by Open and Generate in a build without cgo.
var ErrNoCgo = errors.New("pkcs11: this countersign was built without cgo (CGO_ENABLED=0, as the release binaries and the image are), so it cannot load a PKCS #11 module; build it with CGO_ENABLED=1, or use a key file")

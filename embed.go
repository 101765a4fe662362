// Package countersign holds what the binary carries with it: the default
// configuration that `countersign serve` runs when given none.
package countersign

import _ "embed"

// DefaultConfig is the repository's mcp.yaml, embedded at build time.
//
//go:embed mcp.yaml
var DefaultConfig []byte

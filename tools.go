//go:build tools

package countersign

// The witness tests run torchwood's litewitness, a real C2SP tlog-witness,
// built from the module cache (witness/witnesstest). This import keeps it
// and its dependencies in go.mod and go.sum; the file is never compiled.
import _ "filippo.io/torchwood/cmd/litewitness"

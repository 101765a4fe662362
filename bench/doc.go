// Package bench is the floor under Countersign's measurements: benchmarks,
// in its tests, of what one Ed25519 signature, one durable SQLite commit
// and one action digest cost on the machine at hand. The commands beside it
// run the suite: bench/csbench against a bare MCP server (bench/baseline),
// bench/crashload under load with a crash in the middle.
package bench

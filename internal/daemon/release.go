package daemon

import "github.com/countersign/countersign"

// Release is this binary's release version (the VERSION file), as the
// database records it (store.CheckSchema) and its refusal of a newer
// database names it.
func Release() string { return countersign.Version() }

package daemon

import "runtime/debug"

// Release is this binary's release version, as the database records it
// (store.CheckSchema) and its refusal of a newer database names it.
// (The version command's own source, once the release version has one
// place in the repository, should be this one too.)
func Release() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}

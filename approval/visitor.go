package approval

// What a visitor of the approver page sends is untrusted: anyone on the
// listener's network can POST with a cookie and header pair of their own
// choosing, so CSRF protection stops other sites, not other local
// processes. This file keeps what they send out of the signed log
// (invariant 12) and bounds how much work and how many rows they cause:
//
//   - ids and tokens in paths and bodies must have the shape the server
//     issues (a UUID, a 32-byte base64url token) before anything looks them up;
//   - approval.rejected reasons are fixed words (ceremony.Reason, each
//     check's Words) plus ids the server issued, never text from the request;
//   - begin and finish are rate limited per client address and per request
//     (by the page, approval/page);
//   - ceremonies nobody finished are deleted once they expire (ceremony.RP.Sweep).

// bounded cuts visitor text for the process log (slog quotes it).
func bounded(s string) string {
	const n = 200
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"filippo.io/torchwood"
	"github.com/countersign/countersign/vocab"
)

var (
	idPattern       = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
	decimalPattern  = regexp.MustCompile(`^[0-9]{1,18}(\.[0-9]{1,4})?$`)
)

// spell spells a vocabulary's values as oneOf lists them.
func spell[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

// Classifications returns the classifications a secret may have, least
// sensitive first.
func Classifications() []string {
	return []string{"public", "internal", "confidential", "restricted"}
}

// validate checks what decoding cannot: required values, ranges, enums,
// addresses and references between sections. Each section has its step;
// they run in this order, which is the order problems are reported in.
func (c *Config) validate() []problem {
	var v validator
	c.validateServer(&v)
	c.validateHTTP(&v)
	c.validateOAuth(&v)
	c.validateApproval(&v)
	c.validateApprovers(&v)
	c.validateLedger(&v)
	c.validateDeploy(&v)
	c.validateSecrets(&v)
	c.validateAudit(&v)
	c.validateStore(&v)
	c.validateLimits(&v)
	c.validateUpstreams(&v)
	c.validateNotify(&v)
	c.validateIdentity(&v)
	c.validateTools(&v)
	return v.problems
}

func (c *Config) validateServer(v *validator) {
	s := c.Server
	v.nonEmpty("server.name", s.Name)
	v.id("server.stdio_agent", s.StdioAgent)
	v.oneOf("server.log_format", s.LogFormat, "text", "json")
	v.oneOf("server.log_level", s.LogLevel, "debug", "info", "warn", "error")
	v.positive("server.shutdown_timeout", s.ShutdownTimeout)
	if s.Workers < 1 || s.Workers > 100 {
		v.fail("server.workers", "expected 1 to 100, got %d", s.Workers)
	}
}

func (c *Config) validateHTTP(v *validator) {
	h := c.HTTP
	if h.Addr != "" {
		v.hostPort("http.addr", h.Addr)
	}
	if h.Issuer != "" {
		v.url("http.issuer", h.Issuer)
		if u, err := url.Parse(h.Issuer); err == nil && (u.RawQuery != "" || u.Fragment != "") {
			v.fail("http.issuer", "expected a URL without query or fragment, got %q", h.Issuer)
		}
	}
	if h.MaxBodyBytes < 1024 {
		v.fail("http.max_body_bytes", "expected at least 1024, got %d", h.MaxBodyBytes)
	}
	if h.Addr != "" && len(h.Agents) == 0 && !h.OAuth.Enabled() && !loopbackAddr(h.Addr) {
		v.fail("http.agents", "an HTTP listener on %s (not loopback) needs at least one agent token (run countersign agents add NAME) or http.oauth", h.Addr)
	}
	agents := map[string]bool{}
	for i, a := range h.Agents {
		p := fmt.Sprintf("http.agents[%d]", i)
		v.id(p+".id", a.ID)
		if agents[a.ID] {
			v.fail(p+".id", "duplicate agent id %q", a.ID)
		}
		agents[a.ID] = true
		if b, err := hex.DecodeString(a.TokenSHA256); err != nil || len(b) != 32 {
			v.fail(p+".token_sha256", "expected 64 hex digits (the SHA-256 of the token)")
		}
	}
}

func (c *Config) validateApproval(v *validator) {
	ap := c.Approval
	v.hostPort("approval.listen", ap.Listen)
	// With a malformed listen nothing could be derived from it, and
	// saying so four more times would bury the one thing to fix.
	if !(ap.derived.publicURL && ap.PublicURL == "") {
		v.url("approval.public_url", ap.PublicURL)
		v.nonEmpty("approval.rp_id", ap.RPID)
		if len(ap.Origins) == 0 {
			v.fail("approval.origins", "expected at least one origin, e.g. http://localhost:8710")
		}
		if len(ap.AllowedHosts) == 0 {
			v.fail("approval.allowed_hosts", "expected at least one host name, e.g. localhost:8710")
		}
	}
	if net.ParseIP(ap.RPID) != nil {
		v.fail("approval.rp_id", "WebAuthn refuses IP addresses as RP ID; use a name such as localhost")
	}
	v.nonEmpty("approval.rp_name", ap.RPName)
	for i, o := range ap.Origins {
		v.url(fmt.Sprintf("approval.origins[%d]", i), o)
	}
	v.positive("approval.timeout", ap.Timeout)
	v.positive("approval.poll_interval", ap.PollInterval)
	v.positive("approval.progress_every", ap.ProgressEvery)
	v.positive("approval.enroll_ttl", ap.EnrollTTL)
	v.positive("approval.result_ttl", ap.ResultTTL)
	if ap.BlockFor < 0 {
		v.fail("approval.block_for", "expected 0 (a call waits until decided) or a positive duration under your agents' request timeout, such as 50s, got %s", ap.BlockFor)
	}
	if ap.MaxBodyBytes < 1024 {
		v.fail("approval.max_body_bytes", "expected at least 1024, got %d", ap.MaxBodyBytes)
	}
	if ap.MaxBatch < 1 || ap.MaxBatch > MaxBatchLimit {
		v.fail("approval.max_batch", "expected 1 (no batches) to %d, got %d", MaxBatchLimit, ap.MaxBatch)
	}
	v.oneOf("approval.attestation", ap.Attestation, "none", "direct")
	if len(ap.AttestationRoots) > 0 && ap.Attestation != "direct" {
		v.fail("approval.attestation", "attestation_roots need attestation: direct")
	}
	if (ap.TLSCertFile == "") != (ap.TLSKeyFile == "") {
		v.fail("approval.tls_cert_file", "tls_cert_file and tls_key_file go together")
	}
	c.checkApproval(v)
}

func (c *Config) validateApprovers(v *validator) {
	approvers := map[string]bool{}
	for i, a := range c.Approvers {
		p := fmt.Sprintf("approvers[%d]", i)
		v.id(p+".id", a.ID)
		if approvers[a.ID] {
			v.fail(p+".id", "duplicate approver id %q", a.ID)
		}
		approvers[a.ID] = true
		v.nonEmpty(p+".name", a.Name)
		for j, r := range a.Roles {
			v.id(fmt.Sprintf("%s.roles[%d]", p, j), r)
		}
	}
}

// validateLedger checks the ledger's accounts and counterparties, and that
// the transfer tool has an account to move money from.
func (c *Config) validateLedger(v *validator) {
	accounts := map[string]bool{}
	for i, a := range c.Ledger.Accounts {
		p := fmt.Sprintf("ledger.accounts[%d]", i)
		v.id(p+".id", a.ID)
		if accounts[a.ID] {
			v.fail(p+".id", "duplicate account id %q", a.ID)
		}
		accounts[a.ID] = true
		if !currencyPattern.MatchString(a.Currency) {
			v.fail(p+".currency", "expected an ISO 4217 code such as USD, got %q", a.Currency)
		}
		if !decimalPattern.MatchString(a.Balance) {
			v.fail(p+".balance", "expected a decimal string such as \"1000.00\", got %q", a.Balance)
		}
	}
	payees := map[string]bool{}
	for i, cp := range c.Ledger.Counterparties {
		p := fmt.Sprintf("ledger.counterparties[%d].name", i)
		v.nonEmpty(p, cp.Name)
		if payees[cp.Name] {
			v.fail(p, "duplicate counterparty %q", cp.Name)
		}
		payees[cp.Name] = true
	}
	if _, ok := c.Tools["transfer"]; ok && len(c.Ledger.Accounts) == 0 {
		v.fail("ledger.accounts", "the transfer tool needs at least one account")
	}
}

// validateDeploy checks the deploy section, which only the deploy tool
// uses.
func (c *Config) validateDeploy(v *validator) {
	if _, ok := c.Tools["deploy"]; !ok {
		return
	}
	d := c.Deploy
	if len(d.Command) == 0 || d.Command[0] == "" {
		v.fail("deploy.command", "expected an argv list such as [./deploy.sh, \"{service}\", \"{version}\", \"{environment}\"]")
	}
	if len(d.Services) == 0 {
		v.fail("deploy.services", "expected at least one service")
	}
	if len(d.Environments) == 0 {
		v.fail("deploy.environments", "expected at least one environment")
	}
	v.positive("deploy.timeout", d.Timeout)
	if d.MaxOutputBytes < 1 {
		v.fail("deploy.max_output_bytes", "expected a positive size, got %d", d.MaxOutputBytes)
	}
}

func (c *Config) validateSecrets(v *validator) {
	_, readSecret := c.Tools["read_secret"]
	_, listSecrets := c.Tools["list_secrets"]
	if readSecret || listSecrets {
		v.nonEmpty("secrets.dir", c.Secrets.Dir)
	}
	v.oneOf("secrets.default_classification", c.Secrets.DefaultClassification, Classifications()...)
	for i, s := range c.Secrets.Classified {
		p := fmt.Sprintf("secrets.classified[%d]", i)
		v.nonEmpty(p+".name", s.Name)
		v.oneOf(p+".classification", s.Classification, Classifications()...)
	}
}

func (c *Config) validateAudit(v *validator) {
	v.positive("audit.checkpoint_every", c.Audit.CheckpointEvery)
	v.oneOf("audit.sync", c.Audit.Sync, "full", "normal")
	c.validateWitnesses(v)
	c.validateExport(v)
	c.validatePKCS11(v)
}

// validateStore accepts an empty store.url (SQLite) or a PostgreSQL URL
// naming a host or socket; messages never carry its password.
func (c *Config) validateStore(v *validator) {
	s := c.Store.URL
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	if err != nil {
		// url's error quotes the whole URL, password included.
		v.fail("store.url", "not a URL")
		return
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		v.fail("store.url", "expected a postgres:// or postgresql:// URL (empty: SQLite in the data directory), got %s", c.Store.Redacted())
		return
	}
	if u.Host == "" && u.Query().Get("host") == "" {
		v.fail("store.url", "%s names no host (postgres://user@host:5432/db, or ?host=/socket/dir)", c.Store.Redacted())
	}
	if strings.Trim(u.Path, "/") == "" && u.Query().Get("dbname") == "" {
		v.fail("store.url", "%s names no database (postgres://user@host/db)", c.Store.Redacted())
	}
}

func (c *Config) validateLimits(v *validator) {
	l := c.Limits
	if l.MaxArgBytes < 1024 || l.MaxArgBytes > 16<<20 {
		v.fail("limits.max_arg_bytes", "expected 1024 to 16777216, got %d", l.MaxArgBytes)
	}
	if l.MaxArgDepth < 2 || l.MaxArgDepth > 1000 {
		v.fail("limits.max_arg_depth", "expected 2 to 1000, got %d", l.MaxArgDepth)
	}
	if l.PendingPerAgent < 1 || l.PendingPerAgent > 100000 {
		v.fail("limits.pending_per_agent", "expected 1 to 100000, got %d", l.PendingPerAgent)
	}
	if l.PendingTotal < l.PendingPerAgent || l.PendingTotal > 1000000 {
		v.fail("limits.pending_total", "expected pending_per_agent (%d) to 1000000, got %d", l.PendingPerAgent, l.PendingTotal)
	}
	if l.CallsPerSecond < 1 || l.CallsPerSecond > 1000000 {
		v.fail("limits.calls_per_second", "expected 1 to 1000000, got %d", l.CallsPerSecond)
	}
	if l.CallBurst < 1 || l.CallBurst > 1000000 {
		v.fail("limits.call_burst", "expected 1 to 1000000, got %d", l.CallBurst)
	}
}

// validateTools checks each tool under tools, in name order so problems
// come out the same on every run.
func (c *Config) validateTools(v *validator) {
	if len(c.Tools) == 0 && len(c.Upstreams) == 0 {
		v.fail("tools", "expected at least one tool or upstream (built-in tools: %s)", strings.Join(BuiltinTools(), ", "))
	}
	names := make([]string, 0, len(c.Tools))
	for name := range c.Tools {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		c.validateTool(v, name, c.Tools[name])
	}
}

func (c *Config) validateTool(v *validator, name string, t Tool) {
	p := "tools." + name
	if _, upstream := c.UpstreamOf(name); !upstream && !slices.Contains(BuiltinTools(), name) {
		v.fail(p, "unknown tool (built-in tools: %s; upstream tools are named <prefix><tool>, e.g. files__read_file)", strings.Join(BuiltinTools(), ", "))
		return
	}
	v.oneOf(p+".level", string(t.Level), spell(vocab.Levels())...)
	if t.Quorum < 0 {
		v.fail(p+".quorum", "expected 0 (the level's default) or more, got %d", t.Quorum)
	}
	if t.UserVerification != "" {
		v.oneOf(p+".user_verification", string(t.UserVerification), spell(vocab.UserVerifications())...)
	}
	if t.Wait != "" {
		v.oneOf(p+".wait", t.Wait, "block", "poll")
	}
	if t.Timeout < 0 {
		v.fail(p+".timeout", "expected a positive duration, got %s", t.Timeout)
	}
	if name == "ciba" && t.Grants.Enabled() {
		v.fail(p+".grants", "not allowed: CIBA requests are redeemed by their client, not run as tool calls a grant could cover")
	} else {
		t.validateGrants(v, p)
	}
	if t.Batchable && t.Level == vocab.LevelCritical {
		v.fail(p+".batchable", "a critical tool cannot be batchable: each critical call keeps its own tap with user verification")
	}
	for i, r := range t.Rules {
		rp := fmt.Sprintf("%s.rules[%d]", p, i)
		v.nonEmpty(rp+".when", r.When)
		v.oneOf(rp+".level", string(r.Level), spell(vocab.Levels())...)
		if r.Quorum < 0 {
			v.fail(rp+".quorum", "expected 0 (the level's default) or more, got %d", r.Quorum)
		}
	}
}

var (
	upstreamNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	prefixPattern       = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)
	envRefPattern       = regexp.MustCompile(`\$\{[^}]*\}?`)
	envNamePattern      = regexp.MustCompile(`^\$\{[A-Za-z_][A-Za-z0-9_]*\}$`)
)

func (c *Config) validateUpstreams(v *validator) {
	names := map[string]bool{}
	for i, u := range c.Upstreams {
		p := fmt.Sprintf("upstreams[%d]", i)
		if !upstreamNamePattern.MatchString(u.Name) {
			v.fail(p+".name", "expected a lower-case name of letters, digits, _ and - (at most 32), got %q", u.Name)
		}
		if names[u.Name] {
			v.fail(p+".name", "duplicate upstream name %q", u.Name)
		}
		names[u.Name] = true
		validateUpstreamTransport(v, p, u)
		if !prefixPattern.MatchString(u.Prefix) {
			v.fail(p+".prefix", "expected 1 to 40 letters, digits, _ or -, got %q", u.Prefix)
		}
		if u.DefaultLevel != "" {
			v.oneOf(p+".default_level", string(u.DefaultLevel), spell(vocab.Levels())...)
		}
		if u.ConnectTimeout <= 0 {
			v.fail(p+".connect_timeout", "expected a positive duration such as 30s, got %s", u.ConnectTimeout)
		}
		if u.CallTimeout <= 0 {
			v.fail(p+".call_timeout", "expected a positive duration such as 10m, got %s", u.CallTimeout)
		}
		c.validatePrefixClashes(v, p, i)
	}
}

// validateUpstreamTransport checks how an upstream is reached: a command
// or a URL, each with only its own settings, and well-formed ${NAME}
// references in env and headers.
func validateUpstreamTransport(v *validator, p string, u Upstream) {
	switch {
	case len(u.Command) > 0 && u.URL != "":
		v.fail(p, "set either command (stdio) or url (HTTP), not both")
	case len(u.Command) == 0 && u.URL == "":
		v.fail(p, "expected command: [program, args...] or url: http://host:port/mcp")
	case len(u.Command) > 0 && u.Command[0] == "":
		v.fail(p+".command[0]", "required: the program to run")
	case u.URL != "":
		v.url(p+".url", u.URL)
	}
	if u.URL == "" && len(u.Headers) > 0 {
		v.fail(p+".headers", "headers apply to url upstreams only")
	}
	if len(u.Command) == 0 && (u.Dir != "" || len(u.Env) > 0) {
		v.fail(p, "dir and env apply to command upstreams only")
	}
	for _, kv := range []struct {
		what string
		m    map[string]string
	}{{"env", u.Env}, {"headers", u.Headers}} {
		for k, val := range kv.m {
			for _, ref := range envRefPattern.FindAllString(val, -1) {
				if !envNamePattern.MatchString(ref) {
					v.fail(p+"."+kv.what+"."+k, "malformed variable reference %q: expected ${NAME}", ref)
				}
			}
		}
	}
}

// validatePrefixClashes refuses a prefix of upstreams[i] that would make a
// tool name ambiguous: one that overlaps an earlier upstream's, or that a
// built-in tool's name starts with.
func (c *Config) validatePrefixClashes(v *validator, p string, i int) {
	u := c.Upstreams[i]
	for j, w := range c.Upstreams[:i] {
		if strings.HasPrefix(u.Prefix, w.Prefix) || strings.HasPrefix(w.Prefix, u.Prefix) {
			v.fail(p+".prefix", "%q overlaps the prefix %q of upstreams[%d]: a tool name would be ambiguous", u.Prefix, w.Prefix, j)
		}
	}
	for _, b := range BuiltinTools() {
		if strings.HasPrefix(b, u.Prefix) {
			v.fail(p+".prefix", "%q would also match the built-in tool %s", u.Prefix, b)
		}
	}
}

// ValidID reports whether s may be the id of an approver, an agent or a
// role: lower-case letters, digits, . _ and -, at most 64.
func ValidID(s string) bool { return idPattern.MatchString(s) }

type validator struct{ problems []problem }

func (v *validator) fail(path, format string, args ...any) {
	v.problems = append(v.problems, problem{path, fmt.Sprintf(format, args...)})
}

func (v *validator) nonEmpty(path, s string) {
	if strings.TrimSpace(s) == "" {
		v.fail(path, "required")
	}
}

func (v *validator) oneOf(path, s string, allowed ...string) {
	if !slices.Contains(allowed, s) {
		v.fail(path, "expected one of %s, got %q", strings.Join(allowed, ", "), s)
	}
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.fail(path, "expected a positive duration such as 30s, got %s", d)
	}
}

func (v *validator) id(path, s string) {
	if !idPattern.MatchString(s) {
		v.fail(path, "expected a lower-case id (letters, digits, . _ -), got %q", s)
	}
}

func (v *validator) hostPort(path, addr string) {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		v.fail(path, "expected host:port such as 127.0.0.1:8710, got %q", addr)
	}
}

// loopbackAddr reports whether a host:port listens on loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && isLoopbackHost(host)
}

func (v *validator) url(path, s string) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.fail(path, "expected an http(s) URL such as http://localhost:8710, got %q", s)
	}
}

// validateWitnesses checks audit.witnesses: each an http(s) URL and a
// tlog-cosignature key, no key twice (a witness counted twice would fake
// a quorum), and a lag bound that is not negative.
func (c *Config) validateWitnesses(v *validator) {
	seen := map[string]int{}
	for i, w := range c.Audit.Witnesses {
		p := fmt.Sprintf("audit.witnesses[%d]", i)
		v.url(p+".url", w.URL)
		k, err := torchwood.NewCosignatureVerifier(strings.TrimSpace(w.Key))
		if err != nil {
			v.fail(p+".key", "expected the witness's cosignature verifier key (name+hash+base64, as litewitness prints it): %v, got %q", err, w.Key)
			continue
		}
		if j, dup := seen[k.String()]; dup {
			v.fail(p+".key", "the same witness key as audit.witnesses[%d]", j)
		}
		seen[k.String()] = i
	}
	if c.Audit.WitnessMaxLag < 0 {
		v.fail("audit.witness_max_lag", "expected 0 (report only) or a positive duration such as 10m, got %s", c.Audit.WitnessMaxLag)
	}
	if c.Audit.WitnessMaxLag > 0 && len(c.Audit.Witnesses) == 0 {
		v.fail("audit.witness_max_lag", "set without audit.witnesses")
	}
}

// Package config loads and validates Countersign's configuration (mcp.yaml).
//
// The file is decoded once into the typed structs below and checked as a
// whole; every error names the file, the key path (tools.transfer.rules[1].when)
// and what was expected. The rest of the program never sees raw maps.
package config

import (
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign/vocab"
)

// Config is the whole of mcp.yaml after defaults and environment overrides.
type Config struct {
	Server    Server          `mapstructure:"server"`
	HTTP      HTTP            `mapstructure:"http"`
	Approval  Approval        `mapstructure:"approval"`
	Approvers []Approver      `mapstructure:"approvers"`
	Ledger    Ledger          `mapstructure:"ledger"`
	Deploy    Deploy          `mapstructure:"deploy"`
	Secrets   Secrets         `mapstructure:"secrets"`
	Audit     Audit           `mapstructure:"audit"`
	Store     Store           `mapstructure:"store"`
	Tools     map[string]Tool `mapstructure:"tools"`
	Upstreams []Upstream      `mapstructure:"upstreams"`
	Limits    Limits          `mapstructure:"limits"`
	Notify    []Notify        `mapstructure:"notify"`
	Identity  Identity        `mapstructure:"identity"`

	// Source is the file the config came from, or "(embedded default)".
	Source string `mapstructure:"-"`
	// Dir is the directory relative paths were resolved against: the
	// config file's directory, or for the embedded default the data
	// directory (where serve writes the demo files it names). Empty when
	// the config was parsed without one ([Parse]): paths stay as written.
	Dir string `mapstructure:"-"`
	// Warnings are what a person should hear about that does not stop
	// serve: COUNTERSIGN_ variables that override nothing (env.go).
	Warnings []string `mapstructure:"-"`
}

// Server holds process-wide settings.
type Server struct {
	Name            string        `mapstructure:"name"`
	DataDir         string        `mapstructure:"data_dir"`
	LogFormat       string        `mapstructure:"log_format"` // text | json
	LogLevel        string        `mapstructure:"log_level"`  // debug | info | warn | error
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// Workers bounds concurrent tool calls under stdio. Calls waiting for a
	// human hold a worker, so this must be well above the number of
	// approvals expected to wait at once.
	Workers int `mapstructure:"workers"`
	// StdioAgent is the agent name of the one client served over stdio, as
	// policies (agent == "...") and the audit log see it.
	StdioAgent string `mapstructure:"stdio_agent"`
}

// HTTP configures the agent listener (Streamable HTTP at /mcp, SSE at /sse).
type HTTP struct {
	Addr         string   `mapstructure:"addr"`
	MaxBodyBytes int64    `mapstructure:"max_body_bytes"`
	AllowedHosts []string `mapstructure:"allowed_hosts"`
	// Agents authenticate with a bearer token; only its SHA-256 is stored.
	// With no agents configured the listener accepts anonymous agents, which
	// is only allowed on a loopback address.
	Agents []Agent `mapstructure:"agents"`
	// Issuer is the iss of approval tokens and the issuer of the CIBA
	// discovery document; default http://<the listener's address>. Set it
	// to the public URL when a proxy or TLS terminator fronts the listener.
	Issuer string `mapstructure:"issuer"`
	// OAuth lets agents present OAuth access tokens (config/oauth.go).
	OAuth OAuth `mapstructure:"oauth"`
}

// Agent is one MCP client allowed on the HTTP listener.
type Agent struct {
	ID          string `mapstructure:"id"`
	TokenSHA256 string `mapstructure:"token_sha256"` // hex
}

// Approval configures the approver page and WebAuthn. PublicURL, RPID,
// Origins and AllowedHosts left empty are derived from Listen (see
// [Approval.Derive]); set explicitly, they must agree with it and with each
// other.
type Approval struct {
	Listen        string        `mapstructure:"listen"`     // 127.0.0.1:8710
	PublicURL     string        `mapstructure:"public_url"` // http://localhost:8710
	RPID          string        `mapstructure:"rp_id"`
	RPName        string        `mapstructure:"rp_name"`
	Origins       []string      `mapstructure:"origins"`
	AllowedHosts  []string      `mapstructure:"allowed_hosts"`
	Timeout       time.Duration `mapstructure:"timeout"`        // default request lifetime
	PollInterval  time.Duration `mapstructure:"poll_interval"`  // CIBA interval
	ProgressEvery time.Duration `mapstructure:"progress_every"` // heartbeat to waiting agents
	EnrollTTL     time.Duration `mapstructure:"enroll_ttl"`     // one-time enrollment link lifetime
	MaxBodyBytes  int64         `mapstructure:"max_body_bytes"` // approver page POST limit
	TLSCertFile   string        `mapstructure:"tls_cert_file"`  // optional
	// Attestation asks keys for an attestation at enrollment: "none"
	// (default) or "direct". AttestationRoots (PEM files) makes it
	// required: a key whose attestation does not chain to one of them is
	// refused (Yubico publishes the root of YubiKey attestations).
	Attestation      string   `mapstructure:"attestation"`
	AttestationRoots []string `mapstructure:"attestation_roots"`
	TLSKeyFile       string   `mapstructure:"tls_key_file"` // optional
	// InsecureNoTLS lets the page listen beyond loopback without TLS, for
	// an https proxy in front that terminates it. Approvers still sign in.
	InsecureNoTLS bool `mapstructure:"insecure_no_tls"`
	// MaxBatch bounds how many requests one tap may approve together
	// (tools marked batchable); 1 turns batches off.
	MaxBatch int `mapstructure:"max_batch"`
	// ResultTTL is how long the result of an approved call is kept,
	// sealed, for its agent to collect (approval_status, tasks/result)
	// after the run ended; then it is erased.
	ResultTTL time.Duration `mapstructure:"result_ttl"`
	// BlockFor bounds how long a block-mode call holds its connection
	// open for a decision: then it returns authorization_pending and the
	// request goes on as a poll-mode one (collected with approval_status),
	// before common clients' 60 s request timeouts cut it. 0: the call
	// waits until the request is decided or expires.
	BlockFor time.Duration `mapstructure:"block_for"`
	// MaxAuthAge bounds how long ago an approver signed in through the
	// identity provider (its auth_time): past it the page sends them to
	// the provider to sign in again.
	MaxAuthAge time.Duration `mapstructure:"max_auth_age"`

	derived derivedFields // which of the fields above Derive filled in
}

// Approver is a human who may countersign.
type Approver struct {
	ID    string   `mapstructure:"id"`
	Name  string   `mapstructure:"name"`
	Roles []string `mapstructure:"roles"`
}

// Ledger seeds the money backend.
type Ledger struct {
	Accounts       []Account      `mapstructure:"accounts"`
	Counterparties []Counterparty `mapstructure:"counterparties"`
}

// Account is a ledger account; Balance is a decimal string in major units.
type Account struct {
	ID       string `mapstructure:"id"`
	Name     string `mapstructure:"name"`
	Currency string `mapstructure:"currency"`
	Balance  string `mapstructure:"balance"`
}

// Counterparty is a payee known to the ledger at start.
type Counterparty struct {
	Name  string `mapstructure:"name"`
	Known bool   `mapstructure:"known"`
}

// Deploy configures the command backend of the deploy tool.
type Deploy struct {
	// Command is an argv; {service}, {version} and {environment} are
	// replaced per argument. It never runs through a shell.
	Command        []string      `mapstructure:"command"`
	Services       []string      `mapstructure:"services"`
	Environments   []string      `mapstructure:"environments"`
	Timeout        time.Duration `mapstructure:"timeout"`
	MaxOutputBytes int           `mapstructure:"max_output_bytes"`
}

// Secrets configures the secrets backend: one file per secret in Dir.
type Secrets struct {
	Dir                   string   `mapstructure:"dir"`
	DefaultClassification string   `mapstructure:"default_classification"`
	Classified            []Secret `mapstructure:"classified"`
}

// Secret gives one secret a classification other than the default.
type Secret struct {
	Name           string `mapstructure:"name"`
	Classification string `mapstructure:"classification"` // public | internal | confidential | restricted
}

// Audit configures the tamper-evident log.
// Store says where the database is.
type Store struct {
	// URL, when set, is a PostgreSQL server the replicas of a team share
	// (postgres://user:password@host:5432/db?sslmode=…, libpq's form).
	// Empty: the SQLite file in the data directory, as always. Its
	// password is never printed: errors and `config print` redact it.
	URL string `mapstructure:"url"`
}

// Target is what store.Connect opens: the URL, or the SQLite file in
// the data directory.
func (s Store) Target(dataDir, fileName string) string {
	if s.URL != "" {
		return s.URL
	}
	return filepath.Join(dataDir, fileName)
}

// Redacted is the URL with its password replaced by xxxxx, for messages.
func (s Store) Redacted() string {
	u, err := url.Parse(s.URL)
	if err != nil {
		return "(a store.url that is not a URL)"
	}
	return u.Redacted()
}

type Audit struct {
	CheckpointEvery time.Duration `mapstructure:"checkpoint_every"`
	// WitnessFile, when set, receives every new signed checkpoint; at start
	// the log must extend the one there (package witness). Put it on
	// storage that a restore of the data directory does not roll back.
	WitnessFile string `mapstructure:"witness_file"`
	// Witnesses are C2SP tlog-witnesses (e.g. torchwood's litewitness)
	// that cosign every new checkpoint; at start the log must extend the
	// tree each of them holds (package witness).
	Witnesses []Witness `mapstructure:"witnesses"`
	// WitnessMaxLag, when positive, makes /readyz fail while a witness
	// has left a checkpoint uncosigned for longer; zero: the lag is only
	// reported (/readyz, countersign_witness_lag_seconds).
	WitnessMaxLag time.Duration `mapstructure:"witness_max_lag"`
	// AcceptRollback is set by serve --accept-rollback, never by the file.
	AcceptRollback bool `mapstructure:"-"`
	// Sync is the durability of every commit to the data directory's
	// database, the audit log's and the ledger's alike: "full" (default)
	// syncs each commit group to disk and survives a power loss; "normal"
	// survives the process being killed, not the machine losing power.
	Sync string `mapstructure:"sync"`
	// KeyFile is the server's signing key when it is not server.key in the
	// data directory. On PostgreSQL (store.url) every replica must sign
	// with one key, made once (countersign audit keygen): a replica never
	// creates one on its own there.
	KeyFile string `mapstructure:"key_file"`
	// PKCS11 keeps the server key in a PKCS #11 token instead
	// (config/pkcs11.go).
	PKCS11 AuditPKCS11 `mapstructure:"pkcs11"`
	// Export delivers every entry to an OpenTelemetry logs endpoint
	// (config/export.go).
	Export AuditExport `mapstructure:"export"`
}

// Witness is one C2SP tlog-witness.
type Witness struct {
	// URL is its submission prefix: checkpoints are POSTed to
	// URL/add-checkpoint.
	URL string `mapstructure:"url"`
	// Key is its cosignature verifier key (vkey, name+hash+base64), as
	// the witness prints it; cosignatures that do not verify with it are
	// refused.
	Key string `mapstructure:"key"`
}

// Limits bound what one agent can make Countersign do or keep, whatever
// the policy says.
type Limits struct {
	// MaxArgBytes and MaxArgDepth bound a call's arguments (JSON size and
	// nesting); a larger call is refused before anything else, and its
	// record keeps only the arguments' SHA-256 and size.
	MaxArgBytes int `mapstructure:"max_arg_bytes"`
	MaxArgDepth int `mapstructure:"max_arg_depth"`
	// PendingPerAgent and PendingTotal cap the approval requests waiting
	// for a human, of one agent and of all; a call that would raise one
	// more is refused before the request is created.
	PendingPerAgent int `mapstructure:"pending_per_agent"`
	PendingTotal    int `mapstructure:"pending_total"`
	// CallsPerSecond and CallBurst are each agent's token bucket for tool
	// calls: a call over it is refused before anything else is done.
	CallsPerSecond int `mapstructure:"calls_per_second"`
	CallBurst      int `mapstructure:"call_burst"`
}

// Tool is the policy and behaviour of one guarded tool.
type Tool struct {
	Level            vocab.Level            `mapstructure:"level"` // low | high | critical | deny
	Rules            []Rule                 `mapstructure:"rules"`
	Approvers        []string               `mapstructure:"approvers"` // approver ids and role:NAME
	Quorum           int                    `mapstructure:"quorum"`
	UserVerification vocab.UserVerification `mapstructure:"user_verification"`
	Timeout          time.Duration          `mapstructure:"timeout"`
	Wait             string                 `mapstructure:"wait"`        // block | poll
	RedactArgs       bool                   `mapstructure:"redact_args"` // keep only the args digest in the audit log
	Grants           Grants                 `mapstructure:"grants"`      // standing grants an approver may give (grant.go); none by default
	// Batchable lets an approver approve this tool's high calls together
	// with others in one tap (approval.max_batch). A call raised to
	// critical is never batchable; a critical tool may not say true.
	Batchable bool `mapstructure:"batchable"`
}

// Rule raises a tool's level when its CEL condition holds.
type Rule struct {
	Name      string      `mapstructure:"name"`
	When      string      `mapstructure:"when"`
	Level     vocab.Level `mapstructure:"level"`
	Approvers []string    `mapstructure:"approvers"`
	Quorum    int         `mapstructure:"quorum"`
}

// BuiltinTools returns the tools Countersign itself provides; each runs
// only when named under tools. Upstream tools are named <prefix><tool>.
func BuiltinTools() []string {
	return []string{
		"get_balance", "list_counterparties", "list_transfers", "transfer",
		"deploy", "read_secret", "list_secrets", "approval_status",
		// ciba is not an MCP tool: it is the policy of CIBA backchannel
		// requests on the agent listener.
		"ciba",
	}
}

// ServedTools returns the built-in MCP tools serve offers for this
// configuration, sorted: those named under tools, approval_status among
// them, but not ciba, which is a policy and no tool. Upstream tools are not
// in it: only their upstreams can list them. config validate counts these,
// so that it and serve's start-up line say the same number.
func (c *Config) ServedTools() []string {
	var out []string
	for _, name := range BuiltinTools() {
		if _, ok := c.Tools[name]; ok && name != "ciba" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Upstream is an MCP server whose tools Countersign guards and re-exposes
// as <prefix><tool>. It is reached either by running Command (stdio) or at
// URL (Streamable HTTP, falling back to SSE). Values in Env and Headers may
// name variables of Countersign's own environment as ${NAME}; they are
// expanded only when connecting and never logged or audited.
type Upstream struct {
	Name    string            `mapstructure:"name"`
	Command []string          `mapstructure:"command"` // argv; never run through a shell
	Dir     string            `mapstructure:"dir"`     // working directory of Command
	Env     map[string]string `mapstructure:"env"`     // added to a minimal environment
	URL     string            `mapstructure:"url"`
	Headers map[string]string `mapstructure:"headers"`
	// Prefix starts every exposed name; default "<name>__".
	Prefix string `mapstructure:"prefix"`
	// DefaultLevel is the level of a tool not listed under tools. Empty:
	// low for a tool annotated readOnlyHint: true, high for anything else.
	DefaultLevel vocab.Level `mapstructure:"default_level"`
	// Approvers of tools not listed under tools; default every approver.
	Approvers []string `mapstructure:"approvers"`
	// Required makes serve refuse to start while the upstream cannot be
	// reached; otherwise it starts, logs, and keeps retrying.
	Required       bool          `mapstructure:"required"`
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
	// CallTimeout bounds one tool call upstream (default 10m). An
	// approved call runs to its end even if its agent leaves; this is the
	// end of waiting for an upstream that never answers, and the call is
	// then recorded as interrupted (outcome unknown).
	CallTimeout time.Duration `mapstructure:"call_timeout"`
}

// ExposedName is the name an agent sees for the upstream's tool.
func (u Upstream) ExposedName(tool string) string { return u.Prefix + tool }

// UpstreamOf returns the upstream whose prefix starts name.
func (c *Config) UpstreamOf(name string) (Upstream, bool) {
	for _, u := range c.Upstreams {
		if u.Prefix != "" && strings.HasPrefix(name, u.Prefix) && len(name) > len(u.Prefix) {
			return u, true
		}
	}
	return Upstream{}, false
}

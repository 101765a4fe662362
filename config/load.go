package config

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Embedded names the source of the built-in default configuration.
const Embedded = "(embedded default)"

// DefaultFile is looked for in the working directory when no path is given.
const DefaultFile = "mcp.yaml"

// EnvPrefix prefixes environment overrides: COUNTERSIGN_SERVER_DATA_DIR
// overrides server.data_dir. COUNTERSIGN_CONFIG names the file itself.
const EnvPrefix = "COUNTERSIGN"

// Load finds and loads the configuration: path if given, else
// $COUNTERSIGN_CONFIG, else ./mcp.yaml if present, else the embedded default.
// Environment overrides are applied, relative paths resolved (against the
// file's directory; for the embedded default, against the data directory),
// and the result is validated, including what serve will open at start:
// files, programs and directories must exist and be usable.
func Load(path string) (*Config, error) {
	c, err := Check(path)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Check is Load for reporting. It returns every problem found, and the
// configuration as far as it could be decoded even when there are problems,
// so that a caller can check more of it (the policies) and report
// everything at once. Only a nil error makes the configuration usable.
func Check(path string) (*Config, error) {
	if path == "" {
		path = os.Getenv(EnvPrefix + "_CONFIG")
	}
	if path == "" {
		if _, err := os.Stat(DefaultFile); err == nil {
			path = DefaultFile
		}
	}
	if path == "" {
		return parse(countersign.DefaultConfig(), Embedded, "", true)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{Source: path, Msg: err.Error()}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{Source: path, Msg: err.Error()}
	}
	return parse(data, path, filepath.Dir(abs), true)
}

// Parse decodes YAML config data, applies defaults and COUNTERSIGN_*
// environment overrides, and validates the result. source names the data in
// errors. Every problem found is reported, one per line. Relative paths are
// left as written and the file system is not consulted: use [Load] for a
// configuration about to be served.
func Parse(data []byte, source string) (*Config, error) {
	c, err := parse(data, source, "", false)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// parse is Parse with, when files is set, relative paths resolved against
// dir ("" for the embedded default: against the data directory) and the
// file system checked.
func parse(data []byte, source, dir string, files bool) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	for key, value := range defaults {
		v.SetDefault(key, value)
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, &Error{Source: source, Msg: "not valid YAML: " + oneLine(err.Error())}
	}
	envWarnings := bindEnv(v, envKeys(slices.Collect(maps.Keys(v.GetStringMap("tools")))))
	settings := v.AllSettings()
	if err := keepCase(data, settings); err != nil {
		return nil, &Error{Source: source, Msg: "not valid YAML: " + oneLine(err.Error())}
	}
	c := &Config{Source: source, Warnings: envWarnings}
	problems := decode(settings, c)
	bad := slices.Clone(problems) // keys whose value could not be read
	var later validator
	c.applyUpstreamDefaults()
	c.applyNotifyDefaults()
	c.applyOAuthDefaults()
	if c.Server.DataDir == "" {
		d, err := DefaultDataDir()
		if err != nil {
			later.fail("server.data_dir", "%v", err)
		}
		c.Server.DataDir = d
	}
	if files {
		c.resolvePaths(dir)
	}
	if err := c.Approval.Derive(c.Approval.Listen); err != nil {
		later.fail("approval.public_url", "%v", err)
	}
	later.problems = append(later.problems, c.validate()...)
	if files {
		c.checkPaths(&later)
	}
	for _, p := range later.problems {
		if !under(p.path, bad) {
			problems = append(problems, p)
		}
	}
	if len(problems) == 0 {
		return c, nil
	}
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = newError(source, p)
	}
	return c, errors.Join(errs...)
}

// under reports whether path is, or is inside, one of the keys in bad: a
// value that could not be decoded is reported once, not again by every
// check that then sees its zero value.
func under(path string, bad []problem) bool {
	for _, b := range bad {
		if path == b.path || strings.HasPrefix(path, b.path+".") || strings.HasPrefix(path, b.path+"[") {
			return true
		}
	}
	return false
}

// envVar returns the environment variable that overrides key, if it is
// set. Keys inside lists (rules[0]) cannot be overridden.
func envVar(key string) (string, bool) {
	if key == "" || strings.ContainsAny(key, "[]") {
		return "", false
	}
	name := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
	return name, os.Getenv(name) != "" // viper ignores empty variables too
}

func newError(source string, p problem) *Error {
	e := &Error{Source: source, Path: p.path, Msg: p.msg}
	if name, ok := envVar(p.path); ok {
		e.Env = name
	}
	return e
}

// keepCase undoes viper's lower-casing where case is data: tool names
// (upstream tools may be called readFile), and the upstreams' env and
// header names. Values under tools still come from viper, so
// COUNTERSIGN_TOOLS_* overrides keep working.
func keepCase(data []byte, settings map[string]any) error {
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return err
	}
	if ups, ok := raw["upstreams"]; ok {
		settings["upstreams"] = ups
	}
	rawTools, _ := raw["tools"].(map[string]any)
	lower, _ := settings["tools"].(map[string]any)
	if rawTools == nil || lower == nil {
		return nil
	}
	tools := make(map[string]any, len(rawTools))
	for name := range rawTools {
		tools[name] = lower[strings.ToLower(name)]
	}
	settings["tools"] = tools
	return nil
}

// DefaultUpstreamCallTimeout is upstreams[].call_timeout when unset.
const DefaultUpstreamCallTimeout = 10 * time.Minute

func (c *Config) applyUpstreamDefaults() {
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Prefix == "" {
			u.Prefix = u.Name + "__"
		}
		if u.ConnectTimeout == 0 {
			u.ConnectTimeout = 30 * time.Second
		}
		if u.CallTimeout == 0 {
			u.CallTimeout = DefaultUpstreamCallTimeout
		}
	}
}

// Error is one problem with a configuration: the file, the key path and what
// was expected, and the environment variable when one set the value.
type Error struct {
	Source string // file name or Embedded
	Path   string // key path, e.g. tools.transfer.rules[1].level; "" for the whole file
	Msg    string
	Env    string // e.g. COUNTERSIGN_APPROVAL_TIMEOUT, when it overrides Path
}

func (e *Error) Error() string {
	switch {
	case e.Path == "":
		return e.Source + ": " + e.Msg
	case e.Env != "":
		return e.Source + ": " + e.Path + " (set by environment variable " + e.Env + "): " + e.Msg
	}
	return e.Source + ": " + e.Path + ": " + e.Msg
}

type problem struct{ path, msg string }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// defaults apply to keys a file leaves out. They match the shipped mcp.yaml,
// so a short config behaves like the default one.
var defaults = map[string]any{
	"server.name":                    "countersign",
	"store.url":                      "", // the SQLite file in the data directory
	"server.data_dir":                "", // DefaultDataDir
	"server.stdio_agent":             "stdio",
	"server.log_format":              "text",
	"server.log_level":               "info",
	"server.shutdown_timeout":        "10s",
	"server.workers":                 64,
	"http.addr":                      "",
	"http.issuer":                    "",
	"http.max_body_bytes":            1 << 20,
	"http.allowed_hosts":             []string{"localhost", "127.0.0.1", "[::1]"},
	"http.oauth.issuer":              "", // these four: off unless one is set
	"http.oauth.audience":            "",
	"http.oauth.scopes":              []string{},
	"http.oauth.agent_claim":         "",
	"approval.listen":                "127.0.0.1:8710",
	"approval.public_url":            "", // these four: derived from listen
	"approval.rp_id":                 "",
	"approval.rp_name":               "Countersign",
	"approval.origins":               []string{},
	"approval.allowed_hosts":         []string{},
	"approval.timeout":               "5m",
	"approval.poll_interval":         "5s",
	"approval.progress_every":        "5s",
	"approval.enroll_ttl":            "10m",
	"approval.max_body_bytes":        64 << 10,
	"approval.max_batch":             10,
	"approval.result_ttl":            "1h",
	"approval.block_for":             "50s",
	"approval.tls_cert_file":         "",
	"approval.attestation":           "none",
	"approval.tls_key_file":          "",
	"approval.insecure_no_tls":       false,
	"deploy.timeout":                 "2m",
	"deploy.max_output_bytes":        64 << 10,
	"secrets.dir":                    "",
	"secrets.default_classification": "internal",
	"audit.checkpoint_every":         "1m",
	"audit.sync":                     "full",
	"audit.key_file":                 "", // server.key in the data directory
	"audit.pkcs11.module":            "", // no token: the key is a file
	"audit.pkcs11.token":             "",
	"audit.pkcs11.key":               "",
	"audit.pkcs11.pin_env":           DefaultPINEnv,
	"audit.witness_max_lag":          "0s",
	"audit.export.endpoint":          "", // no export
	"audit.export.encoding":          "protobuf",
	"audit.export.batch_size":        512,
	"audit.export.timeout":           "10s",
	"audit.export.interval":          "1s",
	"audit.export.retry_max":         "1m",
	"limits.max_arg_bytes":           64 << 10,
	"limits.max_arg_depth":           32,
	"limits.pending_per_agent":       20,
	"limits.pending_total":           200,
	"limits.calls_per_second":        50,
	"limits.call_burst":              100,
	"approval.max_auth_age":          DefaultMaxAuthAge.String(),
	"identity.issuer":                "", // none: approvers come from the YAML list only
	"identity.client_id":             "",
	"identity.client_secret":         "", // better: COUNTERSIGN_IDENTITY_CLIENT_SECRET
	"identity.scopes":                []string{"openid", "email", "profile"},
	"identity.subject_claim":         "sub",
	"identity.groups_claim":          "groups",
	"identity.recheck":               "5m",
}

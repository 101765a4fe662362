package config

import (
	"bytes"
	"errors"
	"os"
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
// Environment overrides are applied and the result is validated.
func Load(path string) (*Config, error) {
	if path == "" {
		path = os.Getenv(EnvPrefix + "_CONFIG")
	}
	if path == "" {
		if _, err := os.Stat(DefaultFile); err == nil {
			path = DefaultFile
		}
	}
	if path == "" {
		return Parse(countersign.DefaultConfig, Embedded)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{Source: path, Msg: err.Error()}
	}
	return Parse(data, path)
}

// Parse decodes YAML config data, applies defaults and COUNTERSIGN_*
// environment overrides, and validates the result. source names the data in
// errors. Every problem found is reported, one per line.
func Parse(data []byte, source string) (*Config, error) {
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
	settings := v.AllSettings()
	if err := keepCase(data, settings); err != nil {
		return nil, &Error{Source: source, Msg: "not valid YAML: " + oneLine(err.Error())}
	}
	var c Config
	var errs []error
	for _, p := range decode(settings, &c) {
		errs = append(errs, &Error{Source: source, Path: p.path, Msg: p.msg})
	}
	if len(errs) == 0 {
		c.applyUpstreamDefaults()
		for _, p := range c.validate() {
			errs = append(errs, &Error{Source: source, Path: p.path, Msg: p.msg})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c.Source = source
	return &c, nil
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

func (c *Config) applyUpstreamDefaults() {
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Prefix == "" {
			u.Prefix = u.Name + "__"
		}
		if u.ConnectTimeout == 0 {
			u.ConnectTimeout = 30 * time.Second
		}
	}
}

// Error is one problem with a configuration: the file, the key path and what
// was expected.
type Error struct {
	Source string // file name or Embedded
	Path   string // key path, e.g. tools.transfer.rules[1].level; "" for the whole file
	Msg    string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Source + ": " + e.Msg
	}
	return e.Source + ": " + e.Path + ": " + e.Msg
}

type problem struct{ path, msg string }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// defaults apply to keys a file leaves out. They match the shipped mcp.yaml,
// so a short config behaves like the default one.
var defaults = map[string]any{
	"server.name":                    "countersign",
	"server.data_dir":                "./countersign-data",
	"server.log_format":              "text",
	"server.log_level":               "info",
	"server.shutdown_timeout":        "10s",
	"server.workers":                 64,
	"http.addr":                      "",
	"http.issuer":                    "",
	"http.max_body_bytes":            1 << 20,
	"http.allowed_hosts":             []string{"localhost", "127.0.0.1", "[::1]"},
	"approval.listen":                "127.0.0.1:8710",
	"approval.public_url":            "http://localhost:8710",
	"approval.rp_id":                 "localhost",
	"approval.rp_name":               "Countersign",
	"approval.origins":               []string{"http://localhost:8710"},
	"approval.allowed_hosts":         []string{"localhost:8710", "127.0.0.1:8710"},
	"approval.timeout":               "5m",
	"approval.poll_interval":         "5s",
	"approval.progress_every":        "5s",
	"approval.enroll_ttl":            "10m",
	"approval.max_body_bytes":        64 << 10,
	"approval.tls_cert_file":         "",
	"approval.tls_key_file":          "",
	"deploy.timeout":                 "2m",
	"deploy.max_output_bytes":        64 << 10,
	"secrets.dir":                    "",
	"secrets.default_classification": "internal",
	"audit.checkpoint_every":         "1m",
	"limits.max_arg_bytes":           64 << 10,
	"limits.max_arg_depth":           32,
}

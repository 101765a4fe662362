package config

import (
	"bytes"
	"fmt"
	"os"

	"github.com/countersign/countersign"
	"github.com/spf13/viper"
)

// Embedded names the source of the built-in default configuration.
const Embedded = "(embedded default)"

// Load reads the config at path, or the embedded default when path is "".
// Environment variables COUNTERSIGN_* override scalar settings.
func Load(path string) (*Config, error) {
	if path == "" {
		return Parse(countersign.DefaultConfig, Embedded)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes and validates YAML config data; source names it in errors.
func Parse(data []byte, source string) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	var c Config
	if err := v.Unmarshal(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	c.Source = source
	return &c, nil
}

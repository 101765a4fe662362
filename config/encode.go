package config

import (
	"reflect"
	"time"

	"go.yaml.in/yaml/v3"
)

// Encode renders c as YAML in the same shape mcp.yaml is written in, for
// `countersign config print`.
// store.url's password, identity.client_secret and the values of
// audit.export.headers (a SIEM's API key) are printed as xxxxx.
func Encode(c *Config) ([]byte, error) {
	shown := *c
	if shown.Store.URL != "" {
		shown.Store.URL = c.Store.Redacted()
	}
	if shown.Identity.ClientSecret != "" {
		shown.Identity.ClientSecret = "xxxxx"
	}
	if len(c.Audit.Export.Headers) > 0 {
		shown.Audit.Export.Headers = make(map[string]string, len(c.Audit.Export.Headers))
		for name := range c.Audit.Export.Headers {
			shown.Audit.Export.Headers[name] = "xxxxx"
		}
	}
	return yaml.Marshal(plain(reflect.ValueOf(shown)))
}

// plain turns a config value into maps, lists and scalars keyed by the
// mapstructure names, with durations as text, so the output loads back.
func plain(v reflect.Value) any {
	if v.Type() == durationType {
		return time.Duration(v.Int()).String()
	}
	switch v.Kind() {
	case reflect.Struct:
		m := map[string]any{}
		for i := range v.NumField() {
			tag := v.Type().Field(i).Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			m[tag] = plain(v.Field(i))
		}
		return m
	case reflect.Map:
		m := map[string]any{}
		for _, k := range v.MapKeys() {
			m[k.String()] = plain(v.MapIndex(k))
		}
		return m
	case reflect.Slice:
		l := make([]any, v.Len())
		for i := range l {
			l[i] = plain(v.Index(i))
		}
		return l
	}
	return v.Interface()
}

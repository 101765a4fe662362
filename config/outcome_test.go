package config

import (
	"strings"
	"testing"
	"time"
)

func TestOutcomeSettingsHaveDefaultsAndNamedErrors(t *testing.T) {
	const upstream = "upstreams:\n  - name: files\n    url: http://127.0.0.1:1/mcp\n"
	c, err := Parse([]byte(minimal+upstream), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Approval.ResultTTL != time.Hour || c.Upstreams[0].CallTimeout != DefaultUpstreamCallTimeout {
		t.Errorf("defaults: result_ttl %v, call_timeout %v", c.Approval.ResultTTL, c.Upstreams[0].CallTimeout)
	}
	for yaml, want := range map[string]string{
		minimal + "approval:\n  result_ttl: -1s\n":     "approval.result_ttl: expected a positive duration",
		minimal + upstream + "    call_timeout: -1s\n": "upstreams[0].call_timeout: expected a positive duration such as 10m",
	} {
		if _, err := Parse([]byte(yaml), "bad.yaml"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
}

package config

import (
	"slices"
	"strings"
	"testing"
)

const notifyBase = minimal + `
approvers:
  - {id: alice, name: Alice, roles: [treasury]}
  - {id: bob, name: Bob}
`

func TestNotifyChannelsDecodeWithDefaults(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Setenv("HOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	c, err := Parse([]byte(notifyBase+`
notify:
  - type: webhook
    url: http://127.0.0.1:9099/hook
    secret: "${HOOK_SECRET}"
    for: [role:treasury, bob]
  - type: ntfy
    url: https://ntfy.example/countersign
    events: [requested, expiring]
`), "n.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Notify) != 2 {
		t.Fatalf("notify = %+v", c.Notify)
	}
	w := c.Notify[0]
	if w.Type != "webhook" || !slices.Equal(w.For, []string{"role:treasury", "bob"}) || !slices.Equal(w.Events, NotifyEvents()) {
		t.Errorf("webhook channel = %+v, want all events by default", w)
	}
	if w.Secret != "${HOOK_SECRET}" {
		t.Errorf("secret %q: the config keeps the reference, not the value", w.Secret)
	}
	if got := w.ExpandSecret(nil); got != "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" {
		t.Errorf("ExpandSecret = %q", got)
	}
	if !slices.Equal(c.Notify[1].Events, []string{"requested", "expiring"}) {
		t.Errorf("ntfy events = %v", c.Notify[1].Events)
	}
}

func TestNotifyProblemsNameTheirPath(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Setenv("UNSET_HOOK_SECRET", "")
	_, err := Parse([]byte(notifyBase+`
notify:
  - type: email
    url: mailto:x@example.com
  - type: webhook
    url: http://127.0.0.1:9099/hook
  - type: webhook
    url: http://127.0.0.1:9099/hook
    secret: "${UNSET_HOOK_SECRET}"
    for: [role:payroll, carol]
    events: [requested, approved, requested, executed]
  - type: slack
    url: https://hooks.example/x
    secret: nope
`), "n.yaml")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`notify[0].type: expected one of webhook, slack, ntfy, got "email"`,
		`notify[0].url: expected an http(s) URL`,
		`notify[1].secret: required for a webhook`,
		`notify[2].secret: environment variable UNSET_HOOK_SECRET is not set`,
		`notify[2].for[0]: no approver has the role "payroll"`,
		`notify[2].for[1]: unknown approver "carol"`,
		`notify[2].events[2]: duplicate event "requested"`,
		`notify[2].events[3]: expected one of requested, approved, denied, expiring, got "executed"`,
		`notify[3].secret: a slack channel has no secret`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}

// A webhook secret is a Standard Webhooks secret; what is wrong with one
// is said without quoting it.
func TestWebhookSecretMustBeAStandardWebhooksSecret(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Setenv("PLAIN_HOOK_SECRET", "plain-password")
	_, err := Parse([]byte(notifyBase+`
notify:
  - type: webhook
    url: http://127.0.0.1:9099/hook
    secret: "${PLAIN_HOOK_SECRET}"
  - type: webhook
    url: http://127.0.0.1:9099/hook
    secret: "whsec_not*base64"
  - type: webhook
    url: http://127.0.0.1:9099/hook
    secret: "whsec_c2hvcnQ="
  - type: webhook
    url: http://127.0.0.1:9099/hook
    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
  - type: ntfy
    url: https://ntfy.example/t
    secret: "tk_plain_token"
`), "n.yaml")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`notify[0].secret: expected a Standard Webhooks secret, whsec_ and base64`,
		`notify[1].secret: the part after whsec_ is not standard base64`,
		`notify[2].secret: the key is 5 bytes; at least 24 are needed`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	for _, not := range []string{"notify[3]", "notify[4]", "plain-password"} {
		if strings.Contains(err.Error(), not) {
			t.Errorf("error mentions %q:\n%v", not, err)
		}
	}
}

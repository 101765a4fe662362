package config

import (
	"encoding/base64"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Notify is one notification channel: where to tell people that a request
// was raised, approved, denied or is about to expire, so that a request
// does not wait for a page nobody has open.
type Notify struct {
	Type string `mapstructure:"type"` // webhook | slack | ntfy
	URL  string `mapstructure:"url"`
	// Secret signs webhook deliveries by the Standard Webhooks scheme
	// (webhook-id, webhook-timestamp, webhook-signature), and must then be
	// a Standard Webhooks secret: whsec_ and the base64 of at least 24
	// random bytes ([WebhookSecretBytes]). For ntfy it is the server's
	// access token (Authorization: Bearer). It may name variables of
	// Countersign's environment as ${NAME}, expanded at start
	// ([Notify.ExpandSecret]) and never logged; written as a literal it is
	// shown by config print.
	Secret string `mapstructure:"secret"`
	// For selects whose requests: approver ids and role:NAME. A request
	// matches when any of its eligible approvers is named or has the role.
	// Empty: every request.
	For []string `mapstructure:"for"`
	// Events to send; default all of NotifyEvents().
	Events []string `mapstructure:"events"`
}

// Notification channel types.
const (
	NotifyWebhook = "webhook"
	NotifySlack   = "slack" // Slack-shaped incoming webhooks: Slack, Mattermost, Rocket.Chat
	NotifyNtfy    = "ntfy"
)

// WebhookSecretBytes is the least key length of a webhook secret, the
// Standard Webhooks specification's minimum.
const WebhookSecretBytes = 24

// webhookSecretProblem says what is wrong with an expanded webhook secret,
// without quoting it; "" when it is a usable whsec_ secret.
func webhookSecretProblem(secret string) string {
	b64, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return "expected a Standard Webhooks secret, whsec_ and base64 (make one with: echo \"whsec_$(openssl rand -base64 32)\")"
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "the part after whsec_ is not standard base64"
	}
	if len(key) < WebhookSecretBytes {
		return fmt.Sprintf("the key is %d bytes; at least %d are needed", len(key), WebhookSecretBytes)
	}
	return ""
}

// NotifyEvents returns the events a channel can be sent.
func NotifyEvents() []string { return []string{"requested", "approved", "denied", "expiring"} }

// ExpandSecret returns the secret with ${NAME} references replaced from
// getenv (os.Getenv when nil).
func (n Notify) ExpandSecret(getenv func(string) string) string {
	if getenv == nil {
		getenv = os.Getenv
	}
	return os.Expand(n.Secret, getenv)
}

func (c *Config) applyNotifyDefaults() {
	for i := range c.Notify {
		if len(c.Notify[i].Events) == 0 {
			c.Notify[i].Events = NotifyEvents()
		}
	}
}

func (c *Config) validateNotify(v *validator) {
	roles := map[string]bool{}
	approvers := map[string]bool{}
	for _, a := range c.Approvers {
		approvers[a.ID] = true
		for _, r := range a.Roles {
			roles[r] = true
		}
	}
	if c.Identity.Enabled() {
		for r := range c.Identity.Roles { // held by people of the identity provider
			roles[r] = true
		}
	}
	for i, n := range c.Notify {
		p := fmt.Sprintf("notify[%d]", i)
		v.oneOf(p+".type", n.Type, NotifyWebhook, NotifySlack, NotifyNtfy)
		v.url(p+".url", n.URL)
		switch {
		case n.Type == NotifyWebhook && n.Secret == "":
			// Unsigned, a receiver could not tell our messages from anyone's.
			v.fail(p+".secret", "required for a webhook: the receiver checks webhook-signature with it (e.g. secret: \"${HOOK_SECRET}\" holding whsec_ and base64)")
		case n.Type == NotifySlack && n.Secret != "":
			v.fail(p+".secret", "a slack channel has no secret: its URL is the credential")
		}
		expandable := true
		for _, ref := range envRefPattern.FindAllString(n.Secret, -1) {
			if !envNamePattern.MatchString(ref) {
				v.fail(p+".secret", "malformed variable reference %q: expected ${NAME}", ref)
				expandable = false
				continue
			}
			// Refusing to start beats signing with an empty key.
			if name := ref[2 : len(ref)-1]; os.Getenv(name) == "" {
				v.fail(p+".secret", "environment variable %s is not set", name)
				expandable = false
			}
		}
		if n.Type == NotifyWebhook && n.Secret != "" && expandable {
			if problem := webhookSecretProblem(n.ExpandSecret(nil)); problem != "" {
				v.fail(p+".secret", "%s", problem)
			}
		}
		for j, f := range n.For {
			fp := fmt.Sprintf("%s.for[%d]", p, j)
			if role, ok := strings.CutPrefix(f, "role:"); ok {
				if !roles[role] {
					v.fail(fp, "no approver has the role %q", role)
				}
			} else if !approvers[f] {
				v.fail(fp, "unknown approver %q (expected an approver id or role:NAME)", f)
			}
		}
		for j, e := range n.Events {
			ep := fmt.Sprintf("%s.events[%d]", p, j)
			v.oneOf(ep, e, NotifyEvents()...)
			if slices.Contains(n.Events[:j], e) {
				v.fail(ep, "duplicate event %q", e)
			}
		}
	}
}

package config

import (
	"strings"
	"testing"
)

// One problem in every section validate checks, and more in upstreams: the
// error names each, in the order of the sections, with the words a user
// reads today.
func TestValidateReportsEverySectionInOrder(t *testing.T) {
	const yaml = `
server:
  workers: 0
http:
  max_body_bytes: 10
approval:
  max_batch: 0
approvers:
  - {id: Al, name: A}
ledger:
  accounts:
    - {id: main, currency: USD, balance: "ten"}
deploy:
  services: [api]
  environments: [prod]
secrets:
  default_classification: secret
audit:
  sync: sometimes
limits:
  max_arg_depth: 1
upstreams:
  - name: files
    command: [/bin/true]
    url: http://127.0.0.1:1/mcp
    prefix: files__
  - name: files
    url: http://127.0.0.1:1/mcp
    prefix: files_
    env: {TOKEN: "${bad"}
    headers: {Authorization: "Bearer ${TOKEN"}
  - name: more
    url: http://127.0.0.1:1/mcp
    prefix: get
    default_level: medium
notify:
  - {type: pager, url: http://127.0.0.1:1/hook}
tools:
  get_balance: {level: low}
  deploy: {level: high}
  launch: {level: low}
  transfer: {level: critical, batchable: true, rules: [{when: "true", level: urgent}]}
`
	_, err := Parse([]byte(yaml), "bad.yaml")
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	at := 0
	for _, want := range []string{
		"server.workers: expected 1 to 100, got 0",
		"http.max_body_bytes: expected at least 1024, got 10",
		"approval.max_batch: expected 1 (no batches) to",
		`approvers[0].id: expected a lower-case id (letters, digits, . _ -), got "Al"`,
		`ledger.accounts[0].balance: expected a decimal string such as "1000.00", got "ten"`,
		"deploy.command: expected an argv list such as",
		`secrets.default_classification: expected one of public, internal, confidential, restricted, got "secret"`,
		`audit.sync: expected one of full, normal, got "sometimes"`,
		"limits.max_arg_depth: expected 2 to 1000, got 1",
		"upstreams[0]: set either command (stdio) or url (HTTP), not both",
		`upstreams[1].name: duplicate upstream name "files"`,
		"upstreams[1]: dir and env apply to command upstreams only",
		`upstreams[1].prefix: "files_" overlaps the prefix "files__" of upstreams[0]: a tool name would be ambiguous`,
		`upstreams[2].default_level: expected one of low, high, critical, deny, got "medium"`,
		`upstreams[2].prefix: "get" would also match the built-in tool get_balance`,
		`notify[0].type: expected one of webhook, slack, ntfy, got "pager"`,
		"tools.launch: unknown tool (built-in tools: get_balance, list_counterparties",
		"tools.transfer.batchable: a critical tool cannot be batchable",
		`tools.transfer.rules[0].level: expected one of low, high, critical, deny, got "urgent"`,
	} {
		i := strings.Index(msg[at:], want)
		if i < 0 {
			t.Errorf("error does not contain, after what came before:\n  %s\nerror:\n%s", want, msg)
			continue
		}
		at += i + len(want)
	}
	for _, want := range []string{
		`upstreams[1].env.TOKEN: malformed variable reference "${bad": expected ${NAME}`,
		`upstreams[1].headers.Authorization: malformed variable reference "${TOKEN": expected ${NAME}`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %s", want)
		}
	}
}

package daemon

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/vocab"
)

// RestartOnly names every setting a reload cannot change and none it can.
func TestRestartOnlyNamesWhatNeedsARestart(t *testing.T) {
	old := daemontest.Config(t, nil)
	same := func(edit func(*config.Config)) *config.Config {
		return daemontest.Config(t, func(c *config.Config) {
			c.Server.DataDir = old.Server.DataDir
			edit(c)
		})
	}
	for _, tc := range []struct {
		name string
		edit func(*config.Config)
		want []string
	}{
		{"nothing", func(*config.Config) {}, nil},
		{"live settings", func(c *config.Config) {
			c.Approvers = append(c.Approvers, config.Approver{ID: "zed"})
			c.HTTP.Agents = append(c.HTTP.Agents, config.Agent{ID: "bot", TokenSHA256: strings.Repeat("ab", 32)})
			c.Notify = append(c.Notify, config.Notify{Type: "webhook", URL: "http://127.0.0.1:1/hook"})
			c.Limits.PendingTotal, c.Limits.CallsPerSecond, c.Approval.Timeout = 7, 3, 42e9
			gb := c.Tools["get_balance"]
			gb.Level = vocab.LevelDeny
			c.Tools["get_balance"] = gb
			c.Tools["files_read"] = config.Tool{Level: vocab.LevelLow} // a policy, no built-in tool
			c.Limits.MaxArgBytes, c.Limits.MaxArgDepth = 4096, 8
			c.HTTP.OAuth = config.OAuth{Issuer: "https://idp.example.com", Scopes: []string{"mcp:tools"}}
		}, nil},
		{"addresses, directory, store", func(c *config.Config) {
			c.HTTP.Addr, c.Approval.Listen = "127.0.0.1:9", "127.0.0.1:8"
			c.Server.DataDir, c.Store.URL = "/elsewhere", "postgres://db/x"
		}, []string{"approval.listen", "http.addr", "server.data_dir", "store.url"}},
		{"built-in tools, not upstreams", func(c *config.Config) {
			c.Upstreams = append(c.Upstreams, config.Upstream{Name: "fs", Command: []string{"true"}})
			delete(c.Tools, "deploy")
		}, []string{"tools.deploy (adding or removing a built-in tool)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RestartOnly(old, same(tc.edit)); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// A reload puts new approvers in force for the next enrollment, and one
// that changes a restart-only setting changes nothing, approvers included.
func TestReloadSwapsApproversOrNothing(t *testing.T) {
	ctx := context.Background()
	c := daemontest.Config(t, nil)
	s, err := Assemble(ctx, c, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Approvals().CreateEnrollment(ctx, "zed"); err == nil {
		t.Fatal("enrolled an approver the configuration does not name")
	}
	next := func(edit func(*config.Config)) *config.Config {
		return daemontest.Config(t, func(n *config.Config) {
			n.Server.DataDir = c.Server.DataDir
			n.Approvers = append(n.Approvers, config.Approver{ID: "zed", Name: "Zed"})
			edit(n)
		})
	}
	var refused *ReloadError
	err = s.Reload(ctx, next(func(n *config.Config) { n.Server.Workers++ }), daemontest.Logger(t, 0))
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "server.workers") {
		t.Fatalf("a changed server.workers: %v", err)
	}
	if _, err := s.Approvals().CreateEnrollment(ctx, "zed"); err == nil {
		t.Fatal("a refused reload added an approver")
	}
	if err := s.Reload(ctx, next(func(*config.Config) {}), daemontest.Logger(t, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Approvals().CreateEnrollment(ctx, "zed"); err != nil {
		t.Fatalf("enrolling an approver a reload added: %v", err)
	}
	if got := len(daemontest.Entries(t, s.Audit(), vocab.KindPolicyLoaded)); got != 2 {
		t.Errorf("%d policy.loaded entries, want the start's and the reload's", got)
	}
}

// A daemon on port 0 (both listeners, the page's links derived from its
// address) reloads its unchanged file: what the listeners bound is not a
// change; another agent address is.
func TestReloadOnBoundPortsSeesNoChange(t *testing.T) {
	edit := func(c *config.Config) { c.HTTP.Addr = "127.0.0.1:0" }
	c := daemontest.Config(t, edit)
	load := func(more func(*config.Config)) func() (*config.Config, error) {
		return func() (*config.Config, error) {
			return daemontest.Config(t, func(n *config.Config) {
				edit(n)
				n.Server.DataDir = c.Server.DataDir
				more(n)
			}), nil
		}
	}
	opts := testOptions(t)
	opts.Load = load(func(*config.Config) {})
	d := startDaemon(t, c, opts)
	if !c.Approval.Derived() {
		t.Fatal("the test's page address derives nothing")
	}
	if err := d.Reload(context.Background()); err != nil {
		t.Fatalf("reloading the unchanged file: %v", err)
	}
	d.opts.Load = load(func(n *config.Config) { n.HTTP.Addr = "127.0.0.1:1" })
	if err := d.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "http.addr") {
		t.Fatalf("a changed http.addr: %v", err)
	}
}

package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/page"
	"github.com/countersign/countersign/approval/sealed"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
)

// ConfigError marks an error as the configuration's: the command exits
// with its configuration status for it.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// PolicyOptions are the parts of the policy that come from outside the
// tools section. The built-in tools' schemas come from tools, which authz
// must not import: rules are checked against them here.
func PolicyOptions(c *config.Config, log *slog.Logger) authz.Options {
	schemas := map[string]authz.Schema{}
	for name, s := range tools.Schemas(c) {
		schemas[name] = authz.Schema(s)
	}
	return authz.Options{
		DefaultTimeout: c.Approval.Timeout,
		Facts:          tools.Facts(),
		Schemas:        schemas,
		Upstreams:      c.Upstreams,
		Logger:         log,
		IdentityRoles:  identityRoles(c),
	}
}

// CompilePolicy compiles the rules of c; a rule that does not compile is a
// [ConfigError].
func CompilePolicy(c *config.Config, log *slog.Logger) (*authz.Policy, error) {
	p, err := authz.Compile(c.Tools, c.Approvers, PolicyOptions(c, log))
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("%s: %w", c.Source, err)}
	}
	return p, nil
}

// LogPolicy records the policy serve decides with, so that every decision
// in the audit log names it and an auditor can replay decisions offline
// (audit verify --replay-policy).
func LogPolicy(ctx context.Context, log *audit.Log, c *config.Config) error {
	_, err := loadPolicy(ctx, log, c)
	return err
}

func loadPolicy(ctx context.Context, log *audit.Log, c *config.Config) (audit.Entry, error) {
	doc, err := json.Marshal(authz.NewDocument(c.Tools, c.Approvers, PolicyOptions(c, nil)))
	if err != nil {
		return audit.Entry{}, fmt.Errorf("policy document: %w", err)
	}
	return log.LoadPolicy(ctx, doc)
}

// UnknownUpstreamTools names the policies under tools for upstream tools
// that their upstream does not offer: a typo there would otherwise leave
// the real tool on its default level without a word.
func UnknownUpstreamTools(c *config.Config, cat *tools.Catalog) []error {
	var errs []error
	names := make([]string, 0, len(c.Tools))
	for name := range c.Tools {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		u, ok := c.UpstreamOf(name)
		if !ok {
			continue
		}
		if _, ok := cat.Lookup(name); ok {
			continue
		}
		var offered []string
		for _, s := range cat.Specs() {
			if s.Source == u.Name {
				offered = append(offered, s.Def.Name)
			}
		}
		errs = append(errs, &config.Error{Source: c.Source, Path: "tools." + name,
			Msg: fmt.Sprintf("upstream %s offers no tool %q (it offers: %s)", u.Name,
				strings.TrimPrefix(name, u.Prefix), strings.Join(offered, ", "))})
	}
	return errs
}

// ApprovalOptions are the approval service's options from c, without
// those only a serving process has (logger, notifications, result key).
func ApprovalOptions(c *config.Config) approval.Options {
	var approvers []approval.Approver
	for _, a := range c.Approvers {
		approvers = append(approvers, approval.Approver{ID: a.ID, Name: a.Name, Roles: a.Roles})
	}
	return approval.Options{
		RPID: c.Approval.RPID, RPName: c.Approval.RPName, Origins: c.Approval.Origins,
		PublicURL: c.Approval.PublicURL,
		Approvers: approvers, PollInterval: c.Approval.PollInterval,
		EnrollTTL: c.Approval.EnrollTTL, MaxBatch: c.Approval.MaxBatch,
		Attestation: c.Approval.Attestation,
		ResultTTL:   c.Approval.ResultTTL,
	}
}

// PageOptions are the approver page's options, from the same approval
// section as ApprovalOptions: both check a visitor's origin.
func PageOptions(c *config.Config, log *slog.Logger) page.Options {
	return page.Options{
		Origins: c.Approval.Origins, PublicURL: c.Approval.PublicURL, AllowedHosts: c.Approval.AllowedHosts,
		MaxBodyBytes: c.Approval.MaxBodyBytes, RequireSignIn: c.Approval.Remote(), Logger: log,
	}
}

// resultKey is the key approved calls' results are sealed with while they
// wait for their agent, derived from the server key ([ServerKey])
// (package approval/sealed says why there).
func resultKey(c *config.Config) ([]byte, error) {
	serverKey, err := derivationKey(c)
	if err != nil {
		return nil, err
	}
	return sealed.DeriveKey(serverKey)
}

package ciba

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	"github.com/gowebpki/jcs"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/ledger"
)

// A detail that describes what a built-in tool does is judged as that
// tool's call: by its policy, with the facts its own Prepare gathers,
// never with what the client claims. tools.ciba stays the floor (package
// guard combines the decisions). A type whose tool is not configured is
// judged by tools.ciba alone.
var detailTools = map[string]string{
	authzdetails.TypePayment:      "transfer",
	authzdetails.TypeDeployment:   "deploy",
	authzdetails.TypeSecretAccess: "read_secret",
}

// serverFacts are the members of a detail that state a fact the server
// knows better than the client: they are set from the tool's own
// authorization detail, and a client's different value is kept apart, in
// clientClaims, which the page quotes as the client's words.
var serverFacts = map[string][]string{
	authzdetails.TypePayment:      {"counterpartyKnown", "newCounterparty"},
	authzdetails.TypeSecretAccess: {"classification"},
}

// judge prepares each detail that describes a tool's call with that tool,
// writes the server's facts into the request's details, and returns the
// actions for the guard to decide. A detail the tool refuses (an unknown
// account, service or environment; a currency no account holds) refuses
// the request: what the tool's policy cannot judge is not countersigned
// under a weaker one.
func (s *Server) judge(ctx context.Context, req *authRequest) ([]guard.Action, *Error) {
	var actions []guard.Action
	changed := map[int]bool{}
	for i, v := range req.details {
		d, _ := v.(map[string]any)
		typ, _ := d["type"].(string)
		if typ == authzdetails.TypeMCPToolCall {
			a, e := s.upstreamAction(ctx, i, d)
			if e != nil {
				return nil, e
			}
			if a != nil {
				actions = append(actions, *a)
			}
			continue
		}
		tool, ok := detailTools[typ]
		if !ok || !s.opts.Guard.Offers(tool) {
			continue
		}
		args, err := s.toolArgs(typ, d)
		if err != nil {
			return nil, authError(CodeInvalidAuthzDetails, "authorization_details[%d] (%s): %v", i, typ, err)
		}
		call, err := s.opts.Guard.PrepareAction(ctx, tool, args)
		var argErr *tools.ArgError
		switch {
		case errors.Is(err, guard.ErrNoTool):
			continue
		case errors.As(err, &argErr):
			return nil, authError(CodeInvalidAuthzDetails, "authorization_details[%d] (%s) is judged as a %s call, which refuses it: %v", i, typ, tool, err)
		case err != nil:
			return nil, authError(CodeAccessDenied, "authorization_details[%d] (%s): cannot gather the facts %s's policy needs: %v", i, typ, tool, err)
		}
		var own []map[string]any
		if json.Unmarshal(call.Details, &own) != nil || len(own) != 1 {
			return nil, authError(CodeServerError, "authorization_details[%d] (%s): %s describes the call unexpectedly", i, typ, tool)
		}
		if typ == authzdetails.TypePayment {
			if err := sameAmount(d, own[0]); err != nil {
				return nil, authError(CodeInvalidAuthzDetails, "authorization_details[%d] (%s): %v", i, typ, err)
			}
		}
		claims := map[string]any{}
		for _, m := range serverFacts[typ] {
			fact, ok := own[0][m]
			if !ok {
				continue
			}
			if said, ok := d[m]; ok && !reflect.DeepEqual(said, fact) {
				claims[m] = said
			}
			if !reflect.DeepEqual(d[m], fact) {
				d[m], changed[i] = fact, true
			}
		}
		if len(claims) > 0 {
			d[authzdetails.ClientClaims] = claims
		}
		actions = append(actions, guard.Action{Tool: tool, Call: call})
	}
	if len(changed) > 0 {
		if err := rewrite(req, changed); err != nil {
			return nil, authError(CodeServerError, "authorization_details: %v", err)
		}
	}
	return actions, nil
}

// RestoreUsage counts again, after a restart, the amounts of the CIBA
// payments of the last day in the transfer usage windows (entries oldest
// first, as for guard.RestoreUsage), from the amounts the guard kept when
// each was raised, whether or not tools.ciba redacts its arguments; a
// request raised before those were kept counts from its logged
// authorization_details, which hold the payments as they were judged.
func (s *Server) RestoreUsage(ctx context.Context, entries []audit.Entry) error {
	return s.opts.Guard.RestoreBackchannel(ctx, Tool, entries, func(ctx context.Context, args map[string]any) []guard.Action {
		details, _ := args["authorization_details"].([]any)
		var out []guard.Action
		for _, v := range details {
			d, _ := v.(map[string]any)
			typ, _ := d["type"].(string)
			tool, ok := detailTools[typ]
			if !ok {
				continue
			}
			a, err := s.toolArgs(typ, d)
			if err != nil {
				continue
			}
			if call, err := s.opts.Guard.PrepareAction(ctx, tool, a); err == nil {
				out = append(out, guard.Action{Tool: tool, Call: call})
			}
		}
		return out
	})
}

// rewrite puts the changed details into the request's canonical details.
// Only those are encoded again, from their decoded values (strings and
// booleans); every other detail keeps its canonical bytes as they were.
func rewrite(req *authRequest, changed map[int]bool) error {
	var raws []json.RawMessage
	if err := json.Unmarshal(req.Details, &raws); err != nil {
		return err
	}
	for i := range changed {
		b, err := json.Marshal(req.details[i])
		if err != nil {
			return err
		}
		raws[i] = b
	}
	raw, err := json.Marshal(raws)
	if err == nil {
		raw, err = jcs.Transform(raw)
	}
	if err != nil {
		return err
	}
	var value []any
	if err := json.Unmarshal(raw, &value); err != nil {
		return err
	}
	req.Details, req.details = raw, value
	return nil
}

// toolArgs are the arguments of the tool call a detail describes.
func (s *Server) toolArgs(typ string, d map[string]any) (map[string]any, error) {
	str := func(m map[string]any, k string) string { v, _ := m[k].(string); return v }
	switch typ {
	case authzdetails.TypePayment:
		amt, _ := d["instructedAmount"].(map[string]any)
		currency := str(amt, "currency")
		amount, err := strconv.ParseFloat(str(amt, "amount"), 64)
		if err != nil {
			return nil, fmt.Errorf("instructedAmount.amount: %v", err)
		}
		from, err := s.debtor(d, currency)
		if err != nil {
			return nil, err
		}
		args := map[string]any{"from": from, "to": str(d, "creditorName"), "amount": amount, "currency": currency}
		if memo := str(d, "remittanceInformationUnstructured"); memo != "" {
			args["memo"] = memo
		}
		return args, nil
	case authzdetails.TypeDeployment:
		return map[string]any{"service": str(d, "service"), "version": str(d, "version"), "environment": str(d, "environment")}, nil
	case authzdetails.TypeSecretAccess:
		return map[string]any{"name": str(d, "name")}, nil
	}
	return nil, fmt.Errorf("no tool judges type %s", typ)
}

// debtor is the ledger account a payment is judged from: the one
// debtorAccount names by id, or else the only account in its currency.
func (s *Server) debtor(d map[string]any, currency string) (string, error) {
	var ids []string
	for _, a := range s.opts.Accounts {
		if a.Currency == currency {
			ids = append(ids, a.ID)
		}
	}
	if acct, ok := d["debtorAccount"].(map[string]any); ok {
		id, ok := acct["id"].(string)
		if !ok {
			return "", fmt.Errorf("debtorAccount: name the paying ledger account by id (one of %v)", ids)
		}
		return id, nil
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("no ledger account holds %s: the transfer policy cannot judge this payment", currency)
	case 1:
		return ids[0], nil
	}
	return "", fmt.Errorf("debtorAccount is required: several ledger accounts hold %s (%v)", currency, ids)
}

// sameAmount checks that the amount the tool judged is the amount the
// client asked for, to the minor unit (a float64 cannot hold every
// 18-digit amount).
func sameAmount(client, own map[string]any) error {
	get := func(m map[string]any) (string, string) {
		a, _ := m["instructedAmount"].(map[string]any)
		cur, _ := a["currency"].(string)
		amt, _ := a["amount"].(string)
		return cur, amt
	}
	cur, text := get(client)
	_, judged := get(own)
	want, err := ledger.ParseAmount(text, cur)
	if err != nil {
		return fmt.Errorf("instructedAmount.amount: %v", err)
	}
	got, err := ledger.ParseAmount(judged, cur)
	if err != nil || got != want {
		return fmt.Errorf("instructedAmount.amount %s cannot be judged exactly; send fewer digits", text)
	}
	return nil
}

// upstreamAction is the action of an mcp_tool_call detail naming an
// upstream Countersign fronts: the call of its tool as agents see it
// (prefix and name), judged by that tool's policy, or by the upstream's
// default when tools: does not list it. A tool the upstream does not
// offer now (not connected, or its listing changed) is judged by policy
// alone, which gives an unknown tool of a known upstream its default
// level: never weaker than a tool it offers. A server Countersign does
// not front is no action: tools.ciba alone judges it.
func (s *Server) upstreamAction(ctx context.Context, i int, d map[string]any) (*guard.Action, *Error) {
	server, _ := d["server"].(string)
	name, _ := d["tool"].(string)
	args, _ := d["arguments"].(map[string]any)
	if args == nil {
		args = map[string]any{}
	}
	for _, u := range *s.upstreams.Load() {
		if u.Name != server {
			continue
		}
		tool := u.ExposedName(name)
		call, err := s.opts.Guard.PrepareAction(ctx, tool, args)
		var argErr *tools.ArgError
		switch {
		case errors.Is(err, guard.ErrNoTool):
			return &guard.Action{Tool: tool, Call: &tools.Call{Args: args}}, nil
		case errors.As(err, &argErr):
			return nil, authError(CodeInvalidAuthzDetails, "authorization_details[%d] (mcp_tool_call) is judged as a %s call, which refuses it: %v", i, tool, err)
		case err != nil:
			return nil, authError(CodeAccessDenied, "authorization_details[%d] (mcp_tool_call): %s: %v", i, tool, err)
		}
		return &guard.Action{Tool: tool, Call: call}, nil
	}
	return nil, nil
}

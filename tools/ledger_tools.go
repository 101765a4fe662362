package tools

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/ledger"
	"github.com/mark3labs/mcp-go/mcp"
)

// Bounds of the ledger tools' arguments.
const (
	maxMemoLen           = 140
	defaultTransferLimit = 20
	maxTransferLimit     = 100
)

var idempotencyKeyPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// ledgerTools builds the four ledger tools over one ledger. Only accounts
// named in the config are offered, even if the database holds others.
type ledgerTools struct {
	l          *ledger.Ledger
	accounts   map[string]config.Account
	ids        []string
	currencies []string
}

func newLedgerTools(l *ledger.Ledger, cfg config.Ledger) *ledgerTools {
	lt := &ledgerTools{l: l, accounts: map[string]config.Account{}}
	for _, a := range cfg.Accounts {
		lt.accounts[a.ID] = a
		lt.ids = append(lt.ids, a.ID)
		if !slices.Contains(lt.currencies, a.Currency) {
			lt.currencies = append(lt.currencies, a.Currency)
		}
	}
	slices.Sort(lt.ids)
	slices.Sort(lt.currencies)
	return lt
}

func (lt *ledgerTools) tool(name string) (*Spec, error) {
	switch name {
	case "get_balance":
		return lt.getBalance(), nil
	case "list_counterparties":
		return lt.listCounterparties(), nil
	case "list_transfers":
		return lt.listTransfers(), nil
	case "transfer":
		if len(lt.ids) == 0 {
			return nil, errors.New("no ledger accounts configured")
		}
		return lt.transfer(), nil
	}
	return nil, fmt.Errorf("%w %q", errNoTool, name)
}

// accountEnum is the schema of an account id; JSON Schema forbids an empty
// enum, so no accounts means no value is valid.
func (lt *ledgerTools) accountEnum(desc string) map[string]any {
	if len(lt.ids) == 0 {
		return map[string]any{"not": map[string]any{}, "description": desc}
	}
	return map[string]any{"type": "string", "enum": lt.ids, "description": desc}
}

func (lt *ledgerTools) getBalance() *Spec {
	def := mcp.NewToolWithRawSchema("get_balance",
		"Show the balance of one ledger account, or of every account when none is given.",
		schemaObject(map[string]any{
			"account": lt.accountEnum("Account id; omit for all accounts."),
		}))
	def.Annotations = hints("Account balances", true, false, true, false)
	return &Spec{
		Def: def,
		Prepare: func(_ context.Context, args map[string]any) (*Call, error) {
			if err := checkKeys(args, "account"); err != nil {
				return nil, err
			}
			id, err := stringArg(args, "account", false)
			if err != nil {
				return nil, err
			}
			if _, ok := lt.accounts[id]; id != "" && !ok {
				return nil, argErr("account", "unknown account %q (known: %v)", id, lt.ids)
			}
			summary := "Show all balances"
			if id != "" {
				summary = "Show the balance of " + id
			}
			return &Call{Args: copyArgs(args), Summary: summary}, nil
		},
		Run: func(ctx context.Context, call *Call) (*Result, error) {
			id, _ := call.Args["account"].(string)
			all, err := lt.l.Accounts(ctx)
			if err != nil {
				return nil, err
			}
			out := []map[string]any{}
			for _, a := range all {
				if _, ok := lt.accounts[a.ID]; !ok || (id != "" && a.ID != id) {
					continue
				}
				out = append(out, map[string]any{
					"id": a.ID, "name": a.Name, "currency": a.Currency,
					"balance": ledger.FormatAmount(a.Balance, a.Currency),
					"display": ledger.FormatHuman(a.Balance, a.Currency),
				})
			}
			res := map[string]any{"accounts": out}
			return &Result{Content: res, Record: res}, nil
		},
	}
}

func (lt *ledgerTools) listCounterparties() *Spec {
	def := mcp.NewToolWithRawSchema("list_counterparties",
		"List the payees the ledger knows: whether each is verified (known) and when it was first seen.",
		schemaObject(map[string]any{}))
	def.Annotations = hints("Counterparties", true, false, true, false)
	return &Spec{
		Def: def,
		Prepare: func(_ context.Context, args map[string]any) (*Call, error) {
			if err := checkKeys(args); err != nil {
				return nil, err
			}
			return &Call{Args: copyArgs(args), Summary: "List counterparties"}, nil
		},
		Run: func(ctx context.Context, _ *Call) (*Result, error) {
			cps, err := lt.l.Counterparties(ctx)
			if err != nil {
				return nil, err
			}
			out := []map[string]any{}
			for _, c := range cps {
				out = append(out, map[string]any{
					"name": c.Name, "known": c.Known, "first_seen": c.FirstSeen.UTC().Format(time.RFC3339),
				})
			}
			return &Result{Content: map[string]any{"counterparties": out}, Record: map[string]any{"count": len(out)}}, nil
		},
	}
}

// cursorPattern is a list_transfers cursor: the seq of the last transfer of
// the page before. Agents treat it as opaque.
var cursorPattern = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)

func (lt *ledgerTools) listTransfers() *Spec {
	def := mcp.NewToolWithRawSchema("list_transfers",
		fmt.Sprintf("List transfers, newest first, a page at a time: at most limit (default %d, at most %d). "+
			"When there are older ones the result has next_cursor; pass it as cursor for the next page.",
			defaultTransferLimit, maxTransferLimit),
		schemaObject(map[string]any{
			"limit": map[string]any{
				"type": "integer", "minimum": 1, "maximum": maxTransferLimit, "default": defaultTransferLimit,
				"description": fmt.Sprintf("How many transfers to return (default %d, at most %d).", defaultTransferLimit, maxTransferLimit),
			},
			"cursor": map[string]any{
				"type": "string", "pattern": cursorPattern.String(),
				"description": "next_cursor from the previous page; omit for the newest transfers.",
			},
		}))
	def.Annotations = hints("Transfers", true, false, true, false)
	return &Spec{
		Def: def,
		Prepare: func(_ context.Context, args map[string]any) (*Call, error) {
			if err := checkKeys(args, "limit", "cursor"); err != nil {
				return nil, err
			}
			call := &Call{Args: copyArgs(args)}
			limit := float64(defaultTransferLimit)
			if v, ok := args["limit"]; ok {
				f, ok := v.(float64)
				if !ok || f != float64(int64(f)) || f < 1 || f > maxTransferLimit {
					return nil, argErr("limit", "must be a whole number from 1 to %d", maxTransferLimit)
				}
				limit = f
			}
			call.Args["limit"] = limit
			cursor, err := stringArg(args, "cursor", false)
			if err != nil {
				return nil, err
			}
			if cursor != "" && !cursorPattern.MatchString(cursor) {
				return nil, argErr("cursor", "is not a cursor list_transfers returned")
			}
			call.Summary = fmt.Sprintf("List the last %d transfers", int(limit))
			if cursor != "" {
				call.Summary = fmt.Sprintf("List %d transfers older than cursor %s", int(limit), cursor)
			}
			return call, nil
		},
		Run: func(ctx context.Context, call *Call) (*Result, error) {
			limit, _ := call.Args["limit"].(float64)
			if limit < 1 || limit > maxTransferLimit {
				limit = defaultTransferLimit
			}
			var before int64
			if c, _ := call.Args["cursor"].(string); c != "" {
				before, _ = strconv.ParseInt(c, 10, 64)
			}
			// One more than asked says whether another page follows.
			ts, err := lt.l.Transfers(ctx, before, int(limit)+1)
			if err != nil {
				return nil, err
			}
			more := len(ts) > int(limit)
			if more {
				ts = ts[:int(limit)]
			}
			out := []map[string]any{}
			for _, t := range ts {
				out = append(out, transferJSON(t))
			}
			res := map[string]any{"transfers": out}
			if more {
				res["next_cursor"] = strconv.FormatInt(ts[len(ts)-1].Seq, 10)
			}
			return &Result{Content: res, Record: map[string]any{"count": len(out), "more": more}}, nil
		},
	}
}

func transferJSON(t ledger.Transfer) map[string]any {
	m := map[string]any{
		"transfer_id":      t.ID,
		"time":             t.Time.UTC().Format(time.RFC3339Nano),
		"from":             t.From,
		"to":               t.To,
		"amount":           ledger.FormatAmount(t.Amount, t.Currency),
		"currency":         t.Currency,
		"balance_after":    ledger.FormatAmount(t.BalanceAfter, t.Currency),
		"new_counterparty": t.NewPayee,
	}
	if t.Memo != "" {
		m["memo"] = t.Memo
	}
	if t.IdempotencyKey != "" {
		m["idempotency_key"] = t.IdempotencyKey
	}
	return m
}

// transferArgs are a transfer's arguments, checked.
type transferArgs struct {
	req      ledger.TransferRequest
	to       string // normalized payee name
	currency string
}

func (lt *ledgerTools) parseTransfer(args map[string]any) (transferArgs, error) {
	var ta transferArgs
	if err := checkKeys(args, "from", "to", "amount", "currency", "memo", "idempotency_key"); err != nil {
		return ta, err
	}
	from, err := stringArg(args, "from", true)
	if err != nil {
		return ta, err
	}
	acct, ok := lt.accounts[from]
	if !ok {
		return ta, argErr("from", "unknown account %q (known: %v)", from, lt.ids)
	}
	currency, err := stringArg(args, "currency", true)
	if err != nil {
		return ta, err
	}
	if _, err := ledger.MinorUnits(currency); err != nil {
		return ta, argErr("currency", "%v", err)
	}
	if currency != acct.Currency {
		return ta, argErr("currency", "account %s holds %s, not %s", from, acct.Currency, currency)
	}
	raw, ok := args["amount"]
	if !ok {
		return ta, argErr("amount", "is required")
	}
	if _, isString := raw.(string); isString {
		// Policy rules compare args.amount as a number; a string would not.
		return ta, argErr("amount", "must be a JSON number, not a string")
	}
	text, err := ledger.AmountText(raw)
	if err != nil {
		return ta, argErr("amount", "%v", err)
	}
	amount, err := ledger.ParseAmount(text, currency)
	if err != nil {
		return ta, argErr("amount", "%v", err)
	}
	toRaw, err := stringArg(args, "to", true)
	if err != nil {
		return ta, err
	}
	to, err := ledger.NormalizeName(toRaw)
	if err != nil {
		return ta, argErr("to", "%v", err)
	}
	memo, err := stringArg(args, "memo", false)
	if err != nil {
		return ta, err
	}
	if err := checkText(memo, maxMemoLen); err != nil {
		return ta, argErr("memo", "%v", err)
	}
	key, err := stringArg(args, "idempotency_key", false)
	if err != nil {
		return ta, err
	}
	if key != "" && !idempotencyKeyPattern.MatchString(key) {
		return ta, argErr("idempotency_key", "must match %s", idempotencyKeyPattern)
	}
	ta.req = ledger.TransferRequest{From: from, To: to, Currency: currency, Amount: amount, Memo: memo, IdempotencyKey: key}
	ta.to, ta.currency = to, currency
	return ta, nil
}

// checkText refuses over-long text, and control, invisible formatting and
// line or paragraph separator characters, which could forge a line or
// reorder text on the approval page (or be shown only as U+FFFD there).
func checkText(s string, max int) error {
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > max {
		return fmt.Errorf("is %d characters long, at most %d allowed", n, max)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return fmt.Errorf("contains the control or formatting character %U", r)
		}
	}
	return nil
}

func (lt *ledgerTools) transfer() *Spec {
	def := mcp.NewToolWithRawSchema("transfer",
		"Pay an amount from a ledger account to a payee (counterparty) by name. Large amounts and payees "+
			"that are not verified may need a human to approve with a security key; the call then waits. "+
			"Give an idempotency_key to make a retry safe: a repeated key returns the first transfer instead of paying again.",
		schemaObject(map[string]any{
			"from": lt.accountEnum("Account id to pay from."),
			"to": map[string]any{
				"type": "string", "minLength": 1, "maxLength": ledger.MaxNameLen,
				"description": "Payee name. A payee the ledger has never seen is created, unverified.",
			},
			"amount": map[string]any{
				"type": "number", "exclusiveMinimum": 0,
				"description": "Amount in major units (500000 or 12.50), with no more decimals than the currency has.",
			},
			"currency": map[string]any{
				"type": "string", "enum": lt.currencies,
				"description": "ISO 4217 currency code; must be the account's currency.",
			},
			"memo": map[string]any{
				"type": "string", "maxLength": maxMemoLen,
				"description": "Remittance information shown to the approver and the payee.",
			},
			"idempotency_key": map[string]any{
				"type": "string", "minLength": 1, "maxLength": 128, "pattern": idempotencyKeyPattern.String(),
				"description": "Caller-chosen key; a retry with the same key and arguments pays once.",
			},
		}, "from", "to", "amount", "currency"))
	def.Annotations = hints("Transfer money", false, true, false, true)
	return &Spec{
		Def:   def,
		Facts: []string{"counterparty"},
		Prepare: func(ctx context.Context, args map[string]any) (*Call, error) {
			ta, err := lt.parseTransfer(args)
			if err != nil {
				return nil, err
			}
			cp, exists, err := lt.l.Counterparty(ctx, ta.to)
			if err != nil {
				return nil, fmt.Errorf("look up counterparty: %w", err)
			}
			name, firstSeen := ta.to, ""
			if exists {
				name, firstSeen = cp.Name, cp.FirstSeen.UTC().Format(time.RFC3339)
			}
			amount := ledger.FormatAmount(ta.req.Amount, ta.currency)
			detail := map[string]any{
				"type":              authzdetails.TypePayment,
				"actions":           []string{"transfer"},
				"instructedAmount":  map[string]any{"currency": ta.currency, "amount": amount},
				"debtorAccount":     map[string]any{"id": ta.req.From},
				"creditorName":      name,
				"counterpartyKnown": cp.Known,
				"newCounterparty":   !exists,
			}
			if ta.req.Memo != "" {
				detail["remittanceInformationUnstructured"] = ta.req.Memo
			}
			// Every argument the ledger acts on is in what the approver
			// signs, the key that can turn a payment into a replay too.
			if ta.req.IdempotencyKey != "" {
				detail["idempotencyKey"] = ta.req.IdempotencyKey
			}
			return &Call{
				Args: copyArgs(args),
				Facts: map[string]any{"counterparty": map[string]any{
					"name": name, "known": cp.Known, "exists": exists, "first_seen": firstSeen,
				}},
				Details: mustJSON([]any{detail}),
				Summary: fmt.Sprintf("Pay %s from %s to %s", ledger.FormatHuman(ta.req.Amount, ta.currency), ta.req.From, name),
				Value:   &Value{Amount: major(ta.req.Amount, ta.currency), Currency: ta.currency, Counterparty: name},
			}, nil
		},
		Run: func(ctx context.Context, call *Call) (*Result, error) {
			ta, err := lt.parseTransfer(call.Args)
			if err != nil {
				return nil, err
			}
			ta.req.CallID = call.ID
			t, err := lt.l.Transfer(ctx, ta.req)
			if err != nil {
				return nil, err
			}
			return transferResult(t, call.ID), nil
		},
		// The transfer row carries its call's id, committed with it: the
		// ledger can always tell whether a call paid.
		Recover: func(ctx context.Context, call *Call) (*Result, bool, error) {
			t, ok, err := lt.l.TransferByCall(ctx, call.ID)
			if err != nil || !ok {
				return nil, false, err
			}
			return transferResult(t, call.ID), true, nil
		},
	}
}

// transferResult is what a transfer call returns and records. call_id ties
// the call.executed entry to the transfer row, and for a routine call to
// the call.allowed entry it names.
func transferResult(t ledger.Transfer, callID string) *Result {
	out := transferJSON(t)
	out["status"] = "completed"
	out["idempotent_replay"] = t.Replayed
	if callID != "" {
		out["call_id"] = callID
	}
	return &Result{Content: out, Record: out}
}

// major is an amount in minor units as the agent writes it, in major units.
func major(minor int64, currency string) float64 {
	f, _ := strconv.ParseFloat(ledger.FormatAmount(minor, currency), 64)
	return f
}

package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools/deploy"
	"github.com/countersign/countersign/tools/ledger"
	"github.com/countersign/countersign/tools/secrets"
	googleschema "github.com/google/jsonschema-go/jsonschema"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// shipped returns the shipped config pointed at a temp data dir and the
// repository's demo files (go test runs in tools/).
func shipped(t *testing.T) *config.Config { return shippedFor(t) }

func shippedFor(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.Parse(countersign.DefaultConfig(), "mcp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c.Server.DataDir = t.TempDir()
	c.Deploy.Command[0] = "../demo/deploy.sh"
	c.Secrets.Dir = "../demo/secrets"
	return c
}

func openDB(t testing.TB, dir string) *store.DB {
	t.Helper()
	db, err := store.Connect(context.Background(), filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func registry(t testing.TB, c *config.Config) (*Catalog, *store.DB) {
	t.Helper()
	db := openDB(t, c.Server.DataDir)
	r, err := New(context.Background(), c, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, db
}

func lookup(t *testing.T, r *Catalog, name string) *Spec {
	t.Helper()
	tool, ok := r.Lookup(name)
	if !ok {
		t.Fatalf("tool %s not registered", name)
	}
	return tool
}

func TestCatalogHasConfiguredToolsSorted(t *testing.T) {
	r, _ := registry(t, shipped(t))
	var names []string
	for _, tool := range r.Specs() {
		names = append(names, tool.Def.Name)
		if tool.Prepare == nil || tool.Run == nil {
			t.Errorf("%s: missing Prepare or Run", tool.Def.Name)
		}
		if !slices.Equal(tool.Facts, Facts()[tool.Def.Name]) {
			t.Errorf("%s: Facts %v, but Facts() says %v", tool.Def.Name, tool.Facts, Facts()[tool.Def.Name])
		}
	}
	want := []string{"deploy", "get_balance", "list_counterparties", "list_secrets", "list_transfers", "read_secret", "transfer"}
	if !slices.Equal(names, want) {
		t.Errorf("tools %v, want %v (approval_status is the server's)", names, want)
	}
	if _, ok := r.Lookup("approval_status"); ok {
		t.Error("approval_status registered by tools")
	}
}

func TestCatalogOnlyConfiguredTools(t *testing.T) {
	c := shipped(t)
	c.Tools = map[string]config.Tool{"get_balance": {Level: "low"}}
	c.Deploy.Command = []string{"/nonexistent/deploy"} // not configured, so not checked
	c.Secrets.Dir = "/nonexistent"
	r, _ := registry(t, c)
	if got := len(r.Specs()); got != 1 {
		t.Errorf("%d tools, want 1", got)
	}
}

// CheckConfig finds, with key paths and before anything opens, what New
// would refuse.
func TestCheckConfigFindsWhatNewWouldRefuse(t *testing.T) {
	c := shipped(t)
	if errs := CheckConfig(c); len(errs) != 0 {
		t.Fatalf("shipped config: %v", errs)
	}
	c.Ledger.Accounts[0].Currency = "XXY"
	c.Ledger.Accounts[1].Balance = "1.001" // EUR has two decimals
	c.Ledger.Counterparties[0].Name = "  "
	var got []string
	for _, err := range CheckConfig(c) {
		got = append(got, err.Error())
	}
	for i, want := range []string{"mcp.yaml: ledger.accounts[0].currency: ", "mcp.yaml: ledger.accounts[1].balance: \"1.001\": ", "mcp.yaml: ledger.counterparties[0].name: "} {
		if i >= len(got) || !strings.HasPrefix(got[i], want) {
			t.Errorf("problem %d: got %q, want it to start %q", i, got, want)
		}
	}
	if _, err := New(context.Background(), c, openDB(t, c.Server.DataDir)); err == nil {
		t.Error("New accepted what CheckConfig refused")
	}
}

func TestCatalogRefusesBadBackends(t *testing.T) {
	tests := []struct {
		name string
		edit func(*config.Config)
	}{
		{"missing deploy command", func(c *config.Config) { c.Deploy.Command[0] = "../testdata/no-such-deploy.sh" }},
		{"missing secrets dir", func(c *config.Config) { c.Secrets.Dir = "../testdata/no-such-dir" }},
		{"unknown currency", func(c *config.Config) { c.Ledger.Accounts[0].Currency = "XXY" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := shipped(t)
			tc.edit(c)
			db := openDB(t, c.Server.DataDir)
			if r, err := New(context.Background(), c, db); err == nil {
				r.Close()
				t.Error("New succeeded")
			}
		})
	}
}

func TestSeedIsIdempotentAcrossRestarts(t *testing.T) {
	c := shipped(t)
	r, _ := registry(t, c)
	ctx := context.Background()
	tr := lookup(t, r, "transfer")
	call, err := tr.Prepare(ctx, map[string]any{"from": "operating", "to": "Vendor X", "amount": 1500.5, "currency": "USD"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Run(ctx, call); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r2, _ := registry(t, c) // a restart: same data dir, same config
	res, err := lookup(t, r2, "get_balance").Run(ctx, &Call{Args: map[string]any{"account": "operating"}})
	if err != nil {
		t.Fatal(err)
	}
	got := res.Content.(map[string]any)["accounts"].([]map[string]any)[0]["balance"]
	if got != "998499.50" {
		t.Errorf("balance after restart %v, want 998499.50", got)
	}
}

// compiled compiles a tool's schema with the validator the server uses; it
// also checks the schema against the draft 2020-12 meta-schema.
func compiled(t *testing.T, tool *Spec) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(tool.Def.RawInputSchema))
	if err != nil {
		t.Fatalf("%s: schema is not JSON: %v", tool.Def.Name, err)
	}
	url := "mem:///" + tool.Def.Name + ".json"
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(url)
	if err != nil {
		t.Fatalf("%s: invalid JSON Schema: %v", tool.Def.Name, err)
	}
	// And with google/jsonschema-go, which mcp-go's ecosystem uses.
	var gs googleschema.Schema
	if err := json.Unmarshal(tool.Def.RawInputSchema, &gs); err != nil {
		t.Fatalf("%s: %v", tool.Def.Name, err)
	}
	if _, err := gs.Resolve(nil); err != nil {
		t.Fatalf("%s: jsonschema-go cannot resolve the schema: %v", tool.Def.Name, err)
	}
	return s
}

func validate(s *jsonschema.Schema, args string) error {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(args))
	if err != nil {
		return err
	}
	return s.Validate(v)
}

func TestSchemas(t *testing.T) {
	r, _ := registry(t, shipped(t))
	tests := []struct {
		tool  string
		good  []string
		bad   []string
		strip bool
	}{
		{"get_balance", []string{`{}`, `{"account":"operating"}`},
			[]string{`{"account":"savings"}`, `{"account":7}`, `{"extra":1}`, `[]`}, false},
		{"list_counterparties", []string{`{}`}, []string{`{"x":1}`}, false},
		{"list_transfers", []string{`{}`, `{"limit":1}`, `{"limit":100}`, `{"cursor":"42","limit":5}`},
			[]string{`{"limit":0}`, `{"limit":101}`, `{"limit":2.5}`, `{"limit":"5"}`, `{"cursor":"0"}`, `{"cursor":"-1"}`, `{"cursor":7}`}, false},
		{"transfer", []string{
			`{"from":"operating","to":"Vendor X","amount":500000,"currency":"USD"}`,
			`{"from":"payroll","to":"Acme Supplies","amount":12.5,"currency":"EUR","memo":"inv 7","idempotency_key":"k-1"}`,
		}, []string{
			`{"to":"Vendor X","amount":5,"currency":"USD"}`,                      // missing from
			`{"from":"operating","to":"Vendor X","currency":"USD"}`,              // missing amount
			`{"from":"savings","to":"Vendor X","amount":5,"currency":"USD"}`,     // from not in enum
			`{"from":"operating","to":"Vendor X","amount":5,"currency":"GBP"}`,   // currency not in enum
			`{"from":"operating","to":"Vendor X","amount":0,"currency":"USD"}`,   // not > 0
			`{"from":"operating","to":"Vendor X","amount":-5,"currency":"USD"}`,  // negative
			`{"from":"operating","to":"Vendor X","amount":"5","currency":"USD"}`, // a string
			`{"from":"operating","to":"","amount":5,"currency":"USD"}`,           // empty payee
			`{"from":"operating","to":"Vendor X","amount":5,"currency":"USD","idempotency_key":"a b"}`,
			`{"from":"operating","to":"Vendor X","amount":5,"currency":"USD","approved":true}`,
		}, false},
		{"deploy", []string{`{"service":"api","version":"1.2.3","environment":"staging"}`,
			`{"service":"web","version":"v2.0.0-rc.1+build.5","environment":"production"}`},
			[]string{
				`{"service":"api","version":"1.2.3"}`,
				`{"service":"db","version":"1.2.3","environment":"staging"}`,
				`{"service":"api","version":"1.2.3","environment":"prod"}`,
				`{"service":"api","version":"1.0; rm -rf /","environment":"staging"}`,
				`{"service":"api","version":"$(touch /tmp/x)","environment":"staging"}`,
				`{"service":"api","version":"-rf","environment":"staging"}`,
				`{"service":"api","version":"` + strings.Repeat("1", 65) + `","environment":"staging"}`,
			}, false},
		{"read_secret", []string{`{"name":"prod-db-password"}`},
			[]string{`{}`, `{"name":"../x"}`, `{"name":"/etc/passwd"}`, `{"name":"a/b"}`, `{"name":".hidden"}`}, false},
		{"list_secrets", []string{`{}`}, []string{`{"name":"x"}`}, false},
	}
	for _, tc := range tests {
		t.Run(tc.tool, func(t *testing.T) {
			tool := lookup(t, r, tc.tool)
			s := compiled(t, tool)
			for _, args := range tc.good {
				if err := validate(s, args); err != nil {
					t.Errorf("schema rejects %s: %v", args, err)
				}
				var m map[string]any
				json.Unmarshal([]byte(args), &m)
				if _, err := tool.Prepare(context.Background(), m); err != nil {
					t.Errorf("Prepare rejects %s: %v", args, err)
				}
			}
			for _, args := range tc.bad {
				if err := validate(s, args); err == nil {
					t.Errorf("schema accepts %s", args)
				}
				// Prepare refuses it too, schema or not.
				var m map[string]any
				if json.Unmarshal([]byte(args), &m) == nil {
					if _, err := tool.Prepare(context.Background(), m); err == nil {
						t.Errorf("Prepare accepts %s", args)
					}
				}
			}
		})
	}
}

func TestAnnotations(t *testing.T) {
	r, _ := registry(t, shipped(t))
	type h struct{ readOnly, destructive, idempotent, openWorld bool }
	want := map[string]h{
		"get_balance":         {true, false, true, false},
		"list_counterparties": {true, false, true, false},
		"list_transfers":      {true, false, true, false},
		"list_secrets":        {true, false, true, false},
		"read_secret":         {true, false, true, false},
		"transfer":            {false, true, false, true},
		"deploy":              {false, true, false, true},
	}
	for _, tool := range r.Specs() {
		a := tool.Def.Annotations
		if a.ReadOnlyHint == nil || a.DestructiveHint == nil || a.IdempotentHint == nil || a.OpenWorldHint == nil {
			t.Errorf("%s: a hint is unset", tool.Def.Name)
			continue
		}
		got := h{*a.ReadOnlyHint, *a.DestructiveHint, *a.IdempotentHint, *a.OpenWorldHint}
		if got != want[tool.Def.Name] {
			t.Errorf("%s: hints %+v, want %+v", tool.Def.Name, got, want[tool.Def.Name])
		}
		if a.Title == "" || tool.Def.Description == "" {
			t.Errorf("%s: no title or description", tool.Def.Name)
		}
	}
}

func TestTransferPrepare(t *testing.T) {
	r, _ := registry(t, shipped(t))
	ctx := context.Background()
	tr := lookup(t, r, "transfer")
	args := map[string]any{"from": "operating", "to": "Vendor X", "amount": 500000.0, "currency": "USD", "memo": "inv 42"}
	call, err := tr.Prepare(ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	if call.Args["amount"] != 500000.0 {
		t.Errorf("args amount %v, want the number the agent sent", call.Args["amount"])
	}
	cp := call.Facts["counterparty"].(map[string]any)
	if cp["known"] != false || cp["exists"] != false || cp["name"] != "Vendor X" || cp["first_seen"] != "" {
		t.Errorf("facts %v", cp)
	}
	wantDetails := `[{"actions":["transfer"],"counterpartyKnown":false,"creditorName":"Vendor X","debtorAccount":{"id":"operating"},` +
		`"instructedAmount":{"amount":"500000.00","currency":"USD"},"newCounterparty":true,"remittanceInformationUnstructured":"inv 42","type":"payment_initiation"}]`
	if string(call.Details) != wantDetails {
		t.Errorf("details\n %s\nwant\n %s", call.Details, wantDetails)
	}
	if want := "Pay USD 500,000.00 from operating to Vendor X"; call.Summary != want {
		t.Errorf("summary %q, want %q", call.Summary, want)
	}
	// Prepare has no side effects: the payee is still unknown to the ledger.
	res, err := lookup(t, r, "list_counterparties").Run(ctx, &Call{Args: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(res.Content.(map[string]any)["counterparties"].([]map[string]any)); n != 2 {
		t.Errorf("%d counterparties after Prepare, want the 2 seeded", n)
	}

	call, err = tr.Prepare(ctx, map[string]any{"from": "operating", "to": "acme  supplies", "amount": 10.0, "currency": "USD"})
	if err != nil {
		t.Fatal(err)
	}
	cp = call.Facts["counterparty"].(map[string]any)
	if cp["known"] != true || cp["exists"] != true || cp["name"] != "Acme Supplies" || cp["first_seen"] == "" {
		t.Errorf("known payee facts %v", cp)
	}
}

func TestTransferPrepareArgErrors(t *testing.T) {
	r, _ := registry(t, shipped(t))
	tr := lookup(t, r, "transfer")
	base := func() map[string]any {
		return map[string]any{"from": "operating", "to": "Vendor X", "amount": 5.0, "currency": "USD"}
	}
	tests := []struct {
		edit  func(map[string]any)
		field string
		msg   string
	}{
		{func(m map[string]any) { m["amount"] = 1.005 }, "amount", "amount: has 3 decimals, USD allows 2"},
		{func(m map[string]any) { m["amount"] = 0.0 }, "amount", "amount: must be greater than zero"},
		{func(m map[string]any) { m["amount"] = -1.0 }, "amount", ""},
		{func(m map[string]any) { m["amount"] = 1e300 }, "amount", "amount: is too large for USD"},
		{func(m map[string]any) { m["amount"] = true }, "amount", ""},
		{func(m map[string]any) { delete(m, "amount") }, "amount", "amount: is required"},
		{func(m map[string]any) { m["currency"] = "EUR" }, "currency", "currency: account operating holds USD, not EUR"},
		{func(m map[string]any) { m["from"] = "savings" }, "from", ""},
		{func(m map[string]any) { m["to"] = "Vendor\u202eX" }, "to", ""},
		{func(m map[string]any) { m["to"] = "   " }, "to", ""},
		{func(m map[string]any) { m["memo"] = "line one\nApproved by: CFO" }, "memo", ""},
		{func(m map[string]any) { m["memo"] = "line one\u2028Approved by: CFO" }, "memo", ""},
		{func(m map[string]any) { m["idempotency_key"] = "has space" }, "idempotency_key", ""},
		{func(m map[string]any) { m["approved"] = true }, "approved", ""},
	}
	for _, tc := range tests {
		m := base()
		tc.edit(m)
		_, err := tr.Prepare(context.Background(), m)
		var ae *ArgError
		if !errors.As(err, &ae) || ae.Field != tc.field {
			t.Errorf("%v: err %v, want an ArgError on %s", m, err, tc.field)
			continue
		}
		if tc.msg != "" && err.Error() != tc.msg {
			t.Errorf("%v: error %q, want %q", m, err, tc.msg)
		}
	}
	// JPY has no minor unit; BHD has three.
	c := shipped(t)
	c.Ledger.Accounts = append(c.Ledger.Accounts,
		config.Account{ID: "tokyo", Currency: "JPY", Balance: "1000"},
		config.Account{ID: "manama", Currency: "BHD", Balance: "10.000"})
	r2, _ := registry(t, c)
	tr2 := lookup(t, r2, "transfer")
	if _, err := tr2.Prepare(context.Background(), map[string]any{"from": "tokyo", "to": "A", "amount": 0.5, "currency": "JPY"}); err == nil ||
		err.Error() != "amount: has 1 decimals, JPY allows 0" {
		t.Errorf("JPY 0.5: %v", err)
	}
	if _, err := tr2.Prepare(context.Background(), map[string]any{"from": "manama", "to": "A", "amount": 1.125, "currency": "BHD"}); err != nil {
		t.Errorf("BHD 1.125: %v", err)
	}
}

func TestTransferRunOnceWithKey(t *testing.T) {
	r, _ := registry(t, shipped(t))
	ctx := context.Background()
	tr := lookup(t, r, "transfer")
	call, err := tr.Prepare(ctx, map[string]any{"from": "operating", "to": "Vendor X", "amount": 250.75, "currency": "USD", "idempotency_key": "pay-1"})
	if err != nil {
		t.Fatal(err)
	}
	// The key is an argument the ledger acts on: the approver signs it.
	if !strings.Contains(string(call.Details), `"idempotencyKey":"pay-1"`) {
		t.Errorf("details without the idempotency key: %s", call.Details)
	}
	first, err := tr.Run(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	again, err := tr.Run(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	a, b := first.Content.(map[string]any), again.Content.(map[string]any)
	if a["transfer_id"] != b["transfer_id"] || a["idempotent_replay"] != false || b["idempotent_replay"] != true {
		t.Errorf("first %v, retry %v", a, b)
	}
	if a["amount"] != "250.75" || a["balance_after"] != "999749.25" || a["new_counterparty"] != true {
		t.Errorf("result %v", a)
	}
	res, err := lookup(t, r, "get_balance").Run(ctx, &Call{Args: map[string]any{"account": "operating"}})
	if err != nil {
		t.Fatal(err)
	}
	acct := res.Content.(map[string]any)["accounts"].([]map[string]any)[0]
	if acct["balance"] != "999749.25" || acct["display"] != "USD 999,749.25" {
		t.Errorf("balance %v after a retried transfer", acct)
	}
	// Now the payee exists, unverified.
	call, err = tr.Prepare(ctx, map[string]any{"from": "operating", "to": "Vendor X", "amount": 1.0, "currency": "USD"})
	if err != nil {
		t.Fatal(err)
	}
	if cp := call.Facts["counterparty"].(map[string]any); cp["exists"] != true || cp["known"] != false {
		t.Errorf("facts after first payment %v", cp)
	}
	// Overdraft fails at Run and pays nothing.
	call, err = tr.Prepare(ctx, map[string]any{"from": "operating", "to": "Vendor X", "amount": 2e6, "currency": "USD"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Run(ctx, call); !errors.Is(err, ledger.ErrInsufficientFunds) {
		t.Errorf("overdraft: %v", err)
	}
	res, err = lookup(t, r, "list_transfers").Run(ctx, &Call{Args: map[string]any{"limit": 10.0}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(res.Content.(map[string]any)["transfers"].([]map[string]any)); n != 1 {
		t.Errorf("%d transfers recorded, want 1", n)
	}
}

func TestListTransfersDefaultLimit(t *testing.T) {
	r, _ := registry(t, shipped(t))
	call, err := lookup(t, r, "list_transfers").Prepare(context.Background(), map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if call.Args["limit"] != float64(defaultTransferLimit) {
		t.Errorf("limit %v, want default %d in the approved args", call.Args["limit"], defaultTransferLimit)
	}
}

// list_transfers pages instead of stopping silently at its limit: every
// transfer is on exactly one page, newest first, and a transfer made while
// an agent pages does not shift the pages it has not read yet.
func TestListTransfersPages(t *testing.T) {
	r, _ := registry(t, shipped(t))
	ctx := context.Background()
	pay := func(i int) {
		t.Helper()
		tr := lookup(t, r, "transfer")
		call, err := tr.Prepare(ctx, map[string]any{"from": "operating", "to": "Acme Supplies", "amount": float64(i), "currency": "USD"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Run(ctx, call); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 45; i++ {
		pay(i)
	}
	page := func(args map[string]any) ([]string, string) {
		t.Helper()
		lt := lookup(t, r, "list_transfers")
		call, err := lt.Prepare(ctx, args)
		if err != nil {
			t.Fatal(err)
		}
		res, err := lt.Run(ctx, call)
		if err != nil {
			t.Fatal(err)
		}
		content := res.Content.(map[string]any)
		var amounts []string
		for _, tr := range content["transfers"].([]map[string]any) {
			amounts = append(amounts, tr["amount"].(string))
		}
		next, _ := content["next_cursor"].(string)
		return amounts, next
	}
	var all []string
	first, cursor := page(map[string]any{})
	if len(first) != defaultTransferLimit || cursor == "" || first[0] != "45.00" {
		t.Fatalf("first page %v, cursor %q", first, cursor)
	}
	all = append(all, first...)
	pay(46) // between pages: must not shift what follows
	for cursor != "" {
		var got []string
		got, cursor = page(map[string]any{"cursor": cursor})
		all = append(all, got...)
	}
	if len(all) != 45 || all[44] != "1.00" {
		t.Fatalf("%d transfers over the pages, want 45 ending with the first: %v", len(all), all)
	}
	for i, a := range all {
		if want := fmt.Sprintf("%d.00", 45-i); a != want {
			t.Fatalf("transfer %d is %s, want %s", i, a, want)
		}
	}
	if got, next := page(map[string]any{"limit": 100.0}); len(got) != 46 || next != "" {
		t.Errorf("one page of 100: %d transfers, next_cursor %q", len(got), next)
	}
}

func TestDeployTool(t *testing.T) {
	c := shipped(t)
	r, _ := registry(t, c)
	ctx := context.Background()
	dep := lookup(t, r, "deploy")
	call, err := dep.Prepare(ctx, map[string]any{"service": "api", "version": "1.4.2", "environment": "production"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"actions":["deploy"],"environment":"production","service":"api","type":"deployment","version":"1.4.2"}]`; string(call.Details) != want {
		t.Errorf("details %s, want %s", call.Details, want)
	}
	if call.Summary != "Deploy api 1.4.2 to production" {
		t.Errorf("summary %q", call.Summary)
	}
	res, err := dep.Run(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	content := res.Content.(map[string]any)
	if content["exit_code"] != 0 || !strings.Contains(content["output"].(string), "deployed api version 1.4.2 to production") {
		t.Errorf("content %v", content)
	}
	log, err := os.ReadFile(filepath.Join(c.Server.DataDir, "deploys.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(log), "\tapi\t1.4.2\tproduction\n") {
		t.Errorf("deploys.log %q", log)
	}

	// Prepare refuses injection; Run, handed it anyway, passes it as one
	// literal argument and nothing else runs.
	touched := filepath.Join(t.TempDir(), "x")
	for _, v := range []string{"1.0; rm -rf /", "$(touch " + touched + ")"} {
		hostile := map[string]any{"service": "api", "version": v, "environment": "staging"}
		var ae *ArgError
		if _, err := dep.Prepare(ctx, hostile); !errors.As(err, &ae) || ae.Field != "version" {
			t.Errorf("Prepare(%q): %v, want an ArgError on version", v, err)
		}
		if _, err := dep.Run(ctx, &Call{Args: hostile}); err != nil {
			t.Errorf("Run(%q): %v", v, err)
		}
	}
	if _, err := os.Stat(touched); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the injected command ran: %v", err)
	}
	log, _ = os.ReadFile(filepath.Join(c.Server.DataDir, "deploys.log"))
	if !strings.Contains(string(log), "\tapi\t$(touch "+touched+")\tstaging\n") {
		t.Errorf("deploys.log does not hold the literal version: %q", log)
	}
}

func TestDeployFailureCarriesExitCode(t *testing.T) {
	c := shipped(t)
	prog := filepath.Join(t.TempDir(), "fail.sh")
	os.WriteFile(prog, []byte("#!/bin/sh\necho \"no such image $2\" >&2\nexit 7\n"), 0o755)
	c.Deploy.Command = []string{prog, "{service}", "{version}"}
	r, _ := registry(t, c)
	_, err := lookup(t, r, "deploy").Run(context.Background(), &Call{Args: map[string]any{"service": "api", "version": "9.9.9", "environment": "staging"}})
	var re *deploy.RunError
	if !errors.As(err, &re) || re.Outcome.ExitCode != 7 {
		t.Fatalf("err %v, want a RunError with exit code 7", err)
	}
	if !strings.Contains(err.Error(), "exit code 7") || !strings.Contains(err.Error(), "no such image 9.9.9") {
		t.Errorf("error %q lacks the code or the output tail", err)
	}
}

func TestSecretTools(t *testing.T) {
	c := shipped(t)
	r, _ := registry(t, c)
	ctx := context.Background()
	rs := lookup(t, r, "read_secret")
	call, err := rs.Prepare(ctx, map[string]any{"name": "prod-db-password"})
	if err != nil {
		t.Fatal(err)
	}
	sec := call.Facts["secret"].(map[string]any)
	if sec["classification"] != "restricted" || sec["exists"] != true || sec["name"] != "prod-db-password" {
		t.Errorf("facts %v", sec)
	}
	if want := `[{"actions":["read"],"classification":"restricted","name":"prod-db-password","type":"secret_access"}]`; string(call.Details) != want {
		t.Errorf("details %s", call.Details)
	}
	res, err := rs.Run(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	value, _ := res.Content.(map[string]any)["value"].(string)
	if !strings.HasPrefix(value, "FAKE-") {
		t.Fatalf("value %q", value)
	}
	rec, _ := json.Marshal(res.Record)
	if strings.Contains(string(rec), value) || strings.Contains(string(rec), "FAKE") {
		t.Errorf("audit record holds the secret: %s", rec)
	}
	key, err := secrets.LoadOrCreateMACKey(c.Server.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if m := res.Record.(map[string]any); m["hmac_sha256"] != key.Sum([]byte(value)) || m["hmac_key_id"] != key.ID {
		t.Errorf("audit record does not hold the value's HMAC under the data directory's key: %s", rec)
	}
	if strings.Contains(string(rec), `"sha256"`) {
		t.Errorf("audit record holds a plain SHA-256 of the value, which guesses can be tested against: %s", rec)
	}

	call, err = rs.Prepare(ctx, map[string]any{"name": "staging-db-password"})
	if err != nil {
		t.Fatal(err)
	}
	if c := call.Facts["secret"].(map[string]any)["classification"]; c != "internal" {
		t.Errorf("unclassified secret is %v, want the default internal", c)
	}
	call, err = rs.Prepare(ctx, map[string]any{"name": "no-such-secret"})
	if err != nil {
		t.Fatal(err)
	}
	if call.Facts["secret"].(map[string]any)["exists"] != false {
		t.Errorf("missing secret facts %v", call.Facts)
	}
	if _, err := rs.Run(ctx, call); err == nil {
		t.Error("reading a missing secret succeeded")
	}

	for _, name := range []string{"../x", "../../etc/passwd", "/etc/passwd", "a/b", "..", ".hidden"} {
		_, err := rs.Prepare(ctx, map[string]any{"name": name})
		var ae *ArgError
		if !errors.As(err, &ae) || ae.Field != "name" {
			t.Errorf("Prepare(%q): %v, want an ArgError on name", name, err)
		}
		if _, err := rs.Run(ctx, &Call{Args: map[string]any{"name": name}}); err == nil {
			t.Errorf("Run(%q) succeeded", name)
		}
	}

	res, err = lookup(t, r, "list_secrets").Run(ctx, &Call{Args: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(res.Content)
	if strings.Contains(string(out), "FAKE") || strings.Contains(string(out), "value") {
		t.Errorf("list_secrets returned values: %s", out)
	}
	want := `{"secrets":[{"classification":"restricted","name":"payments-api-key"},{"classification":"restricted","name":"prod-db-password"},{"classification":"internal","name":"staging-db-password"}]}`
	if string(out) != want {
		t.Errorf("list_secrets %s, want %s", out, want)
	}
}

func TestReadSecretRefusesSymlinkOut(t *testing.T) {
	c := shipped(t)
	base := t.TempDir()
	dir := filepath.Join(base, "secrets")
	os.Mkdir(dir, 0o700)
	os.WriteFile(filepath.Join(base, "outside"), []byte("OUTSIDE"), 0o600)
	os.Symlink(filepath.Join(base, "outside"), filepath.Join(dir, "link"))
	c.Secrets.Dir = dir
	r, _ := registry(t, c)
	rs := lookup(t, r, "read_secret")
	var ae *ArgError
	if _, err := rs.Prepare(context.Background(), map[string]any{"name": "link"}); !errors.As(err, &ae) {
		t.Errorf("Prepare(link): %v, want an ArgError", err)
	}
	res, err := rs.Run(context.Background(), &Call{Args: map[string]any{"name": "link"}})
	if err == nil {
		t.Errorf("Run(link) returned %v", res.Content)
	}
}

// Schemas, built from the configuration alone for checking policies before
// start, are the schemas the running tools have; and the facts Prepare
// supplies have the shape their schemas promise the policy.
func TestSchemasWithoutBackendsMatchTheCatalog(t *testing.T) {
	c := shipped(t)
	r, _ := registry(t, c)
	schemas := Schemas(c)
	for _, spec := range r.Specs() {
		s, ok := schemas[spec.Def.Name]
		if !ok || !bytes.Equal(s.Args, spec.Def.RawInputSchema) {
			t.Errorf("%s: Schemas gives %s, the tool has %s", spec.Def.Name, s.Args, spec.Def.RawInputSchema)
		}
	}
	for tool, args := range map[string]map[string]any{
		"transfer":    {"from": "operating", "to": "Acme Supplies", "amount": 5.0, "currency": "USD"},
		"read_secret": {"name": "prod-db-password"},
	} {
		call, err := lookup(t, r, tool).Prepare(context.Background(), args)
		if err != nil {
			t.Fatal(err)
		}
		for name, raw := range schemas[tool].Facts {
			doc, _ := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			jc := jsonschema.NewCompiler()
			jc.AddResource("mem:///fact.json", doc)
			fs, err := jc.Compile("mem:///fact.json")
			if err != nil {
				t.Fatal(err)
			}
			fact, _ := json.Marshal(call.Facts[name])
			v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(fact))
			if err := fs.Validate(v); err != nil {
				t.Errorf("%s fact %s %s does not match its schema: %v", tool, name, fact, err)
			}
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// A log written under the shipped policy: replayed against the policy it
// names, genuine decisions pass and one the policy would not have made is
// refused, although every hash and signature is the server's own.
func TestReplayPolicyAgainstTheLoggedPolicy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c, err := config.Parse(countersign.DefaultConfig(), "mcp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.Connect(t, filepath.Join(dir, store.FileName))
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	log, err := auditpg.Open(ctx, db, key, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if err := daemon.LogPolicy(ctx, log, c); err != nil {
		t.Fatal(err)
	}
	call := func(kind vocab.Kind, level string, args string) {
		t.Helper()
		if _, err := log.Append(ctx, audit.Entry{Kind: kind, Agent: "agent-1", Tool: "transfer", Args: json.RawMessage(args), Decision: level}); err != nil {
			t.Fatal(err)
		}
	}
	export := func() []byte {
		t.Helper()
		var buf bytes.Buffer
		if err := log.Export(ctx, &buf, 0); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	small := `{"to":"Acme Supplies","amount":100,"currency":"USD"}`
	call(vocab.KindCallAllowed, "low", small)
	call(vocab.KindCallExecuted, "low", small)
	s, err := verify.Export(bytes.NewReader(export()), log.PublicKey(), verify.Options{ReplayPolicy: newPolicyReplayer()})
	if err != nil {
		t.Fatal(err)
	}
	if s.Replayed != 2 {
		t.Fatalf("summary %+v", s)
	}

	// A 500,000 transfer that ran as if it were routine: the chain, the
	// requirements (it has its call.allowed) and every signature hold;
	// the policy says very-large makes it critical.
	big := `{"to":"Vendor X","amount":500000,"currency":"USD"}`
	call(vocab.KindCallAllowed, "low", big)
	call(vocab.KindCallExecuted, "low", big)
	exp := export()
	if _, err := verify.Export(bytes.NewReader(exp), log.PublicKey(), verify.Options{}); err != nil {
		t.Fatalf("without replay the relabelled call passes, as it should: %v", err)
	}
	_, err = verify.Export(bytes.NewReader(exp), log.PublicKey(), verify.Options{ReplayPolicy: newPolicyReplayer()})
	var ve *verify.Error
	if !errors.As(err, &ve) || ve.Seq != 4 || !strings.Contains(ve.Reason, "rule very-large holds on the logged arguments and raises the call to critical; the log says low") {
		t.Fatalf("replay of the relabelled call: %v", err)
	}
}

package digest

import (
	"testing"
	"time"
)

func sampleGrant(t *testing.T) Grant {
	t.Helper()
	req, err := Compute(sample())
	if err != nil {
		t.Fatal(err)
	}
	return Grant{
		Request: req, GrantID: "5b8f7d7e-3f7a-4c43-9d0b-6a9c2f1e0d11",
		Condition: `agent == "ci" && tool == "transfer" && args.to == "Acme" && args.amount <= 500`,
		MaxCalls:  10,
		ExpiresAt: time.Date(2026, 11, 24, 18, 15, 0, 0, time.UTC),
	}
}

func TestEveryGrantFieldChangesTheDigest(t *testing.T) {
	base, err := ComputeGrant(sampleGrant(t))
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Grant){
		"request":   func(g *Grant) { g.Request[0] ^= 1 },
		"grant id":  func(g *Grant) { g.GrantID = "other" },
		"condition": func(g *Grant) { g.Condition += " && true" },
		"max calls": func(g *Grant) { g.MaxCalls = 11 },
		"expiry":    func(g *Grant) { g.ExpiresAt = g.ExpiresAt.Add(time.Second) },
	} {
		g := sampleGrant(t)
		mutate(&g)
		d, err := ComputeGrant(g)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d == base {
			t.Errorf("changing the %s does not change the grant digest", name)
		}
	}
	// Domain separation: the grant digest is never the request's own.
	if base == sampleGrant(t).Request {
		t.Error("grant digest equals the action digest")
	}
}

func TestComputeGrantRejectsMissingLimits(t *testing.T) {
	for name, mutate := range map[string]func(*Grant){
		"no id":        func(g *Grant) { g.GrantID = "" },
		"no condition": func(g *Grant) { g.Condition = "" },
		"no calls":     func(g *Grant) { g.MaxCalls = 0 },
		"no expiry":    func(g *Grant) { g.ExpiresAt = time.Time{} },
	} {
		g := sampleGrant(t)
		mutate(&g)
		if _, err := ComputeGrant(g); err == nil {
			t.Errorf("%s: ComputeGrant succeeded", name)
		}
	}
}

package guard

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// BenchmarkHandleRoutine is the guard's own share of a routine call, as a
// transport hands it over (decoded arguments and their raw bytes): the
// exactness check, schema, Prepare, the one canonical value, policy, usage
// and the run, with an in-memory log. Compare allocs/op and ns/op before
// and after a change with benchstat:
//
//	go test -run XXX -bench HandleRoutine -benchmem -count 6 ./guard
func BenchmarkHandleRoutine(b *testing.B) {
	log := &memLog{}
	cat := tools.NewCatalog()
	if err := cat.Replace("test", []*tools.Spec{(&counter{}).spec("pay")}); err != nil {
		b.Fatal(err)
	}
	g := New(Options{Catalog: cat, Policy: &fixedPolicy{d: authz.Decision{Level: vocab.LevelLow}}, Audit: log,
		Tools: map[string]config.Tool{"pay": {}}, Limits: Limits{CallsPerSecond: 1e9, CallBurst: 1 << 30}})
	defer g.Close()
	raw := json.RawMessage(`{"amount":1250.75,"to":"Acme Supplies"}`)
	ctx := context.Background()
	for b.Loop() {
		var args map[string]any
		if err := json.Unmarshal(raw, &args); err != nil {
			b.Fatal(err)
		}
		if res := g.Handle(ctx, Call{Tool: "pay", Agent: "bot", Args: args, Raw: raw}); res.IsError {
			b.Fatal(text(res))
		}
		log.mu.Lock()
		log.entries = log.entries[:0]
		log.mu.Unlock()
	}
}

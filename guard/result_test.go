package guard

import (
	"context"
	"testing"

	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// A tool that records its whole result (get_balance does) has the one
// JSON of it in call.executed; a tool that records something else has
// that.
func TestExecutedRecordsTheToolsRecord(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  func() *tools.Result
		want string
	}{
		{"the result itself", func() *tools.Result {
			m := map[string]any{"balance": "10.00", "currency": "USD"}
			return &tools.Result{Content: m, Record: m}
		}, `{"balance":"10.00","currency":"USD"}`},
		{"an equal map is still its own", func() *tools.Result {
			return &tools.Result{Content: map[string]any{"balance": "10.00"}, Record: map[string]any{"balance": "10.00"}}
		}, `{"balance":"10.00"}`},
		{"a summary", func() *tools.Result {
			return &tools.Result{Content: map[string]any{"secret": "s3cr3t"}, Record: map[string]any{"count": 1}}
		}, `{"count":1}`},
		{"no record", func() *tools.Result { return &tools.Result{Content: map[string]any{"x": 1}} }, ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, vocab.LevelLow)
			f.tool.result = func(context.Context) (*tools.Result, error) { return tc.res(), nil }
			if res := f.g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: map[string]any{"amount": 1.0}}); res.IsError {
				t.Fatal(text(res))
			}
			if got := string(f.log.last(vocab.KindCallExecuted).Result); got != tc.want {
				t.Fatalf("call.executed result %s, want %s", got, tc.want)
			}
		})
	}
}

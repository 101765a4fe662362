package guard

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools/upstream"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// withUpstream adds an upstream tool files__write_file (the real upstream
// spec: its details carry every argument) whose runs are counted.
func withUpstream(t *testing.T, f *fixture) *atomic.Int32 {
	t.Helper()
	var runs atomic.Int32
	specs, err := upstream.Specs(config.Upstream{Name: "files", Prefix: "files__"},
		[]*sdk.Tool{{Name: "write_file", InputSchema: map[string]any{"type": "object"}}},
		func(context.Context, string, map[string]any, string) (*mcp.CallToolResult, error) {
			runs.Add(1)
			return mcp.NewToolResultText("wrote"), nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cat.Replace("files", specs); err != nil {
		t.Fatal(err)
	}
	return &runs
}

func values(n int) map[string]any {
	args := map[string]any{}
	for i := range n {
		args[fmt.Sprintf("k%03d", i)] = float64(i)
	}
	return args
}

// A countersigned call whose arguments cannot all be shown is refused
// with the limit named before any request is raised, and recorded as
// call.rejected with the reason; a routine call with the same arguments
// is not affected, and one within the limits raises its request.
func TestArgumentsTooLargeToShowAreRefusedBeforeARequest(t *testing.T) {
	over := values(authzdetails.MaxShownValues + 1)
	long := map[string]any{"content": strings.Repeat("x", authzdetails.MaxShownChars+1)}
	for _, tc := range []struct {
		name string
		args map[string]any
		want string
	}{
		{"too many values", over, fmt.Sprintf("arguments too large to show the approver in full: %d values, at most %d",
			authzdetails.MaxShownValues+1, authzdetails.MaxShownValues)},
		{"a string too long", long, fmt.Sprintf("a value of %d characters (args.content), at most %d",
			authzdetails.MaxShownChars+1, authzdetails.MaxShownChars)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, vocab.LevelHigh)
			runs := withUpstream(t, f)
			res := f.g.Handle(context.Background(), Call{Tool: "files__write_file", Agent: "bot", Args: tc.args})
			if !res.IsError || !strings.Contains(text(res), tc.want) {
				t.Fatalf("result %q, want it to name %q", text(res), tc.want)
			}
			if len(f.humans.created) != 0 || runs.Load() != 0 {
				t.Fatalf("%d requests raised, %d runs", len(f.humans.created), runs.Load())
			}
			e := f.log.last(vocab.KindCallRejected)
			if e.Tool != "files__write_file" || e.Decision != string(vocab.LevelHigh) || !strings.Contains(e.Reason, tc.want) ||
				e.Args != nil || len(e.ArgsSHA256) != 64 {
				t.Fatalf("call.rejected %+v", e)
			}
			for _, k := range f.log.kinds() {
				if k == vocab.KindApprovalRequested || k == vocab.KindCallAllowed {
					t.Fatalf("entries %v", f.log.kinds())
				}
			}

			low := newFixture(t, vocab.LevelLow)
			lowRuns := withUpstream(t, low)
			if res := low.g.Handle(context.Background(), Call{Tool: "files__write_file", Agent: "bot", Args: tc.args}); res.IsError || lowRuns.Load() != 1 {
				t.Fatalf("routine call: %q, %d runs", text(res), lowRuns.Load())
			}
		})
	}

	f := newFixture(t, vocab.LevelHigh)
	withUpstream(t, f)
	f.humans.decide <- vocab.StateDenied
	within := values(authzdetails.MaxShownValues - 1)
	within["content"] = strings.Repeat("y", authzdetails.MaxShownChars)
	f.g.Handle(context.Background(), Call{Tool: "files__write_file", Agent: "bot", Args: within})
	if len(f.humans.created) != 1 {
		t.Fatalf("a call within the limits raised %d requests", len(f.humans.created))
	}
}

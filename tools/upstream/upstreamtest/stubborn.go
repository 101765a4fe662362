package upstreamtest

import (
	"context"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Stubborn is the hostile tool [Options].Stubborn adds:
//
//   - stubborn {name, text, ms >= 0 (default 500)}: waits ms milliseconds
//     and then writes the note as write_note does, whether or not its
//     request was cancelled meanwhile (the client sent
//     notifications/cancelled, or gave up waiting): an upstream that
//     completes its action after being told to cancel. It records
//     "called", then "cancelled" if it saw the cancellation, then
//     "completed" once the note is written. With text "refuse" it answers
//     at once with a JSON-RPC error (invalid params) and writes nothing.
//     Destructive.
//
// Over [Handler], a test that closes the HTTP server's connections while
// stubborn waits has the connection drop mid-call; the note is written all
// the same.
const Stubborn = "stubborn"

type stubbornArgs struct {
	Name string `json:"name" jsonschema:"the note's name"`
	Text string `json:"text" jsonschema:"the note's text"`
	MS   int    `json:"ms,omitempty" jsonschema:"milliseconds to wait before writing"`
}

func (s *server) addStubborn() {
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        Stubborn,
		Description: "Wait, then store a note, even if the call was cancelled meanwhile.",
		InputSchema: objectSchema[stubbornArgs](func(p map[string]*jsonschema.Schema) {
			p["ms"].Minimum = ptr(0.0)
			p["ms"].Default = []byte("500")
		}),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: false, DestructiveHint: ptr(true)},
	}, s.stubborn)
}

func (s *server) stubborn(ctx context.Context, req *mcp.CallToolRequest, in stubbornArgs) (*mcp.CallToolResult, any, error) {
	if err := s.recordCall(req, EventCalled); err != nil {
		return nil, nil, err
	}
	if in.Text == "refuse" {
		return nil, nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "stubborn: refused"}
	}
	t := time.NewTimer(time.Duration(in.MS) * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		if err := s.recordCall(req, EventCancelled); err != nil {
			return nil, nil, err
		}
		<-t.C // and carries on regardless
	case <-t.C:
	}
	s.mu.Lock()
	s.notes[in.Name] = in.Text
	s.mu.Unlock()
	if err := s.recordCall(req, EventCompleted); err != nil {
		return nil, nil, err
	}
	return textResult("wrote %s", in.Name), nil, nil
}

package upstreamtest

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// builtinTools are the tools every server starts with; add_tool refuses
// their names.
var builtinTools = map[string]bool{
	"read_note": true, "write_note": true, "slow": true, "fail": true, "add_tool": true,
	"rpc_error": true, // with Options.RPCError
}

// addedToolName is what add_tool accepts as a name (also in its schema).
var addedToolName = regexp.MustCompile(`^[a-z_]{1,20}$`)

// server holds the state the tools share.
type server struct {
	mcp    *mcp.Server
	record string

	mu      sync.Mutex
	notes   map[string]string
	mutable mutable
}

// NewServer returns a go-sdk server with the tools described in the package
// comment, recording to opts.RecordPath.
func NewServer(opts Options) *mcp.Server {
	s := &server{record: opts.RecordPath, notes: map[string]string{}, mutable: mutable{tools: map[string]mutableTool{}}}
	s.mcp = mcp.NewServer(
		&mcp.Implementation{Name: "countersign-upstreamtest", Version: "0.1.0"},
		&mcp.ServerOptions{
			Logger: stderrLogger(),
			// Tools only: no logging capability.
			Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{ListChanged: true}},
		})

	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "read_note",
		Description: "Read the note stored under a name.",
		InputSchema: objectSchema[noteName](nil),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, DestructiveHint: ptr(false)},
	}, s.readNote)

	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "write_note",
		Description: "Store a note under a name, replacing any note of that name.",
		InputSchema: objectSchema[noteWrite](nil),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: false, DestructiveHint: ptr(true)},
	}, s.writeNote)

	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "slow",
		Description: "Take steps*step_ms milliseconds, reporting progress after each step.",
		InputSchema: objectSchema[slowArgs](func(p map[string]*jsonschema.Schema) {
			p["steps"].Minimum, p["steps"].Maximum = ptr(1.0), ptr(100.0)
			p["steps"].Default = json.RawMessage("5")
			p["step_ms"].Minimum = ptr(0.0)
			p["step_ms"].Default = json.RawMessage("200")
		}),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.slow)

	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "fail",
		Description: "Always fail, with a tool error result.",
		InputSchema: objectSchema[struct{}](nil),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.fail)

	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "add_tool",
		Description: "Add a read-only tool of the given name that echoes its arguments.",
		InputSchema: objectSchema[addToolArgs](func(p map[string]*jsonschema.Schema) {
			p["name"].Pattern = addedToolName.String()
		}),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: false},
	}, s.addTool)

	if opts.RPCError {
		s.addRPCError()
	}
	if opts.Mutable {
		s.addMutable()
	}
	if opts.Stubborn {
		s.addStubborn()
	}

	return s.mcp
}

func ptr[T any](v T) *T { return &v }

// objectSchema infers the input schema of T and lets edit adjust its
// properties.
func objectSchema[T any](edit func(props map[string]*jsonschema.Schema)) *jsonschema.Schema {
	sch, err := jsonschema.For[T](nil)
	if err != nil {
		panic(fmt.Sprintf("upstreamtest: schema for %T: %v", *new(T), err))
	}
	if edit != nil {
		edit(sch.Properties)
	}
	return sch
}

// recordCall records the invocation of req's tool with event.
func (s *server) recordCall(req *mcp.CallToolRequest, event string) error {
	return appendRecord(s.record, req.Params.Name, req.Params.Arguments, req.Params.Meta, event)
}

func textResult(format string, args ...any) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf(format, args...)}}}
}

type noteName struct {
	Name string `json:"name" jsonschema:"the note's name"`
}

type noteWrite struct {
	Name string `json:"name" jsonschema:"the note's name"`
	Text string `json:"text" jsonschema:"the note's text"`
}

// note is read_note's structured content.
type note struct {
	Name  string `json:"name"`
	Text  string `json:"text"`
	Found bool   `json:"found" jsonschema:"whether a note of that name was written"`
}

func (s *server) readNote(_ context.Context, req *mcp.CallToolRequest, in noteName) (*mcp.CallToolResult, note, error) {
	if err := s.recordCall(req, EventCalled); err != nil {
		return nil, note{}, err
	}
	s.mu.Lock()
	text, found := s.notes[in.Name]
	s.mu.Unlock()
	out := note{Name: in.Name, Text: text, Found: found}
	if !found {
		text = "(empty)"
	}
	return textResult("note %s: %s", in.Name, text), out, nil
}

func (s *server) writeNote(_ context.Context, req *mcp.CallToolRequest, in noteWrite) (*mcp.CallToolResult, any, error) {
	if err := s.recordCall(req, EventCalled); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	s.notes[in.Name] = in.Text
	s.mu.Unlock()
	return textResult("wrote %s", in.Name), nil, nil
}

type slowArgs struct {
	Steps  int `json:"steps,omitempty" jsonschema:"number of steps (1..100)"`
	StepMS int `json:"step_ms,omitempty" jsonschema:"milliseconds per step"`
}

func (s *server) slow(ctx context.Context, req *mcp.CallToolRequest, in slowArgs) (*mcp.CallToolResult, any, error) {
	if err := s.recordCall(req, EventCalled); err != nil {
		return nil, nil, err
	}
	token := req.Params.GetProgressToken()
	for i := 1; i <= in.Steps; i++ {
		t := time.NewTimer(time.Duration(in.StepMS) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			if err := s.recordCall(req, EventCancelled); err != nil {
				return nil, nil, err
			}
			return nil, nil, fmt.Errorf("slow: cancelled after %d of %d steps: %w", i-1, in.Steps, ctx.Err())
		case <-t.C:
		}
		if token != nil {
			// Best effort, as for any notification: a failure here is the
			// session going away, which the next step sees as ctx.Done.
			_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
				ProgressToken: token,
				Progress:      float64(i),
				Total:         float64(in.Steps),
				Message:       fmt.Sprintf("step %d/%d", i, in.Steps),
			})
		}
	}
	if err := s.recordCall(req, EventCompleted); err != nil {
		return nil, nil, err
	}
	return textResult("slow: completed %d steps", in.Steps), nil, nil
}

func (s *server) fail(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
	if err := s.recordCall(req, EventCalled); err != nil {
		return nil, nil, err
	}
	res := textResult("upstream failure")
	res.IsError = true
	return res, nil, nil
}

type addToolArgs struct {
	Name string `json:"name" jsonschema:"the new tool's name, ^[a-z_]{1,20}$"`
}

func (s *server) addTool(_ context.Context, req *mcp.CallToolRequest, in addToolArgs) (*mcp.CallToolResult, any, error) {
	if err := s.recordCall(req, EventCalled); err != nil {
		return nil, nil, err
	}
	if !addedToolName.MatchString(in.Name) { // the schema has already said so
		return nil, nil, fmt.Errorf("add_tool: name %q does not match %s", in.Name, addedToolName)
	}
	if builtinTools[in.Name] {
		return nil, nil, fmt.Errorf("add_tool: %s is a built-in tool", in.Name)
	}
	name := in.Name
	t := &mcp.Tool{
		Name:        name,
		Description: "Echo the arguments (added at run time by add_tool).",
		InputSchema: &jsonschema.Schema{Type: "object"},
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, DestructiveHint: ptr(false)},
	}
	s.mu.Lock()
	s.mutable.tools[name] = mutableTool{t, s.echo}
	s.mu.Unlock()
	s.mcp.AddTool(t, s.echo)
	return textResult("added %s", name), nil, nil
}

// echo is the handler of the tools add_tool adds: it returns its arguments
// as JSON text and as structured content.
func (s *server) echo(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	args := map[string]any{}
	if raw := req.Params.Arguments; len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &args); err != nil || args == nil {
			res := textResult("%s: arguments must be a JSON object", req.Params.Name)
			res.IsError = true
			return res, nil
		}
	}
	if err := s.recordCall(req, EventCalled); err != nil {
		res := textResult("%v", err)
		res.IsError = true
		return res, nil
	}
	text, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	res := textResult("%s", text)
	res.StructuredContent = args
	return res, nil
}

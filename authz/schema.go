package authz

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
)

// Schema describes what a tool's rules can see: the JSON Schema of its
// arguments and of each fact variable its backend supplies. Given for a
// tool (see [Options.Schemas]), it makes [Compile] refuse a rule that names
// a field the arguments or facts do not have (args.amout) or compares a
// field with a value of another type (args.environment == 5), instead of
// the rule failing closed on every call.
//
// Only objects that forbid other properties (additionalProperties: false)
// have a fixed set of fields; any other object is a map whose fields are
// not checked. Strings, booleans, lists and nested objects are typed;
// numbers stay dynamic, because JSON has one number type and a rule may
// compare it with 5 as well as 5.0.
type Schema struct {
	Args  json.RawMessage
	Facts map[string]json.RawMessage
}

// schemaTypes declares the object types of one tool's schemas to the CEL
// type checker. It is used to check rules only: rules run in the untyped
// environment, so what a rule does at run time (a missing optional
// argument fails closed) does not change.
type schemaTypes struct {
	*types.Registry
	fields map[string]map[string]*types.Type // object type name -> field -> type
}

func (s *schemaTypes) FindStructType(name string) (*types.Type, bool) {
	if _, ok := s.fields[name]; ok {
		return types.NewTypeTypeWithParam(types.NewObjectType(name)), true
	}
	return s.Registry.FindStructType(name)
}

func (s *schemaTypes) FindStructFieldNames(name string) ([]string, bool) {
	f, ok := s.fields[name]
	if !ok {
		return s.Registry.FindStructFieldNames(name)
	}
	names := make([]string, 0, len(f))
	for n := range f {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, true
}

func (s *schemaTypes) FindStructFieldType(name, field string) (*types.FieldType, bool) {
	f, ok := s.fields[name]
	if !ok {
		return s.Registry.FindStructFieldType(name, field)
	}
	t, ok := f[field]
	if !ok {
		return nil, false
	}
	return &types.FieldType{Type: t}, true
}

// typeOf turns a JSON Schema into the CEL type a rule sees, declaring
// object types under name.
func (s *schemaTypes) typeOf(name string, raw any) *types.Type {
	sch, ok := raw.(map[string]any)
	if !ok {
		return types.DynType
	}
	kind, _ := sch["type"].(string)
	props, hasProps := sch["properties"].(map[string]any)
	if kind == "" && hasProps {
		kind = "object"
	}
	switch kind {
	case "string":
		return types.StringType
	case "boolean":
		return types.BoolType
	case "array":
		if items, ok := sch["items"]; ok {
			return types.NewListType(s.typeOf(name+"[]", items))
		}
		return types.NewListType(types.DynType)
	case "object":
		if !hasProps || sch["additionalProperties"] != false {
			return types.NewMapType(types.StringType, types.DynType)
		}
		fields := map[string]*types.Type{}
		s.fields[name] = fields
		for p, ps := range props {
			fields[p] = s.typeOf(name+"."+p, ps)
		}
		return types.NewObjectType(name)
	}
	if enum, ok := sch["enum"].([]any); ok && len(enum) > 0 && !slices.ContainsFunc(enum, func(v any) bool { _, s := v.(string); return !s }) {
		return types.StringType
	}
	return types.DynType
}

// typedEnv returns the environment a tool's rules are type-checked in, or
// nil when the tool has no schema. facts are the tool's fact variables;
// one without a schema stays a map.
func (c *compiler) typedEnv(tool string, facts []string) (*cel.Env, error) {
	sch, ok := c.opts.Schemas[tool]
	if !ok || len(sch.Args) == 0 {
		return nil, nil
	}
	reg, err := types.NewRegistry()
	if err != nil {
		return nil, err
	}
	st := &schemaTypes{Registry: reg, fields: map[string]map[string]*types.Type{}}
	var args any
	if err := json.Unmarshal(sch.Args, &args); err != nil {
		return nil, fmt.Errorf("arguments schema: %w", err)
	}
	vars := []cel.EnvOption{
		cel.CustomTypeProvider(st),
		cel.CrossTypeNumericComparisons(true),
		cel.Variable("args", st.typeOf("countersign.args."+tool, args)),
		cel.Variable("agent", cel.StringType),
		cel.Variable("tool", cel.StringType),
		cel.Variable("now", cel.TimestampType),
		cel.Variable("usage", st.typeOf("countersign.usage", usageSchema())),
	}
	for _, f := range facts {
		t := types.NewMapType(types.StringType, types.DynType)
		if raw, ok := sch.Facts[f]; ok {
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("fact %s schema: %w", f, err)
			}
			t = st.typeOf("countersign.facts."+tool+"."+f, v)
		}
		vars = append(vars, cel.Variable(f, t))
	}
	return cel.NewEnv(vars...)
}

// usageSchema is the JSON Schema of the usage variable: a number per
// field of UsageKeys(), and nothing else, so a misspelt field is caught.
func usageSchema() any {
	props := map[string]any{}
	for _, k := range UsageKeys() {
		props[k] = map[string]any{"type": "number"}
	}
	return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
}

// checkTyped type-checks a rule that compiled untyped against the tool's
// schemas, and says what the arguments and facts have when it names a field
// they lack.
func (c *compiler) checkTyped(path, rule string, env *cel.Env, expr string, tool string, facts []string) {
	_, iss := env.Compile(expr)
	if iss == nil || iss.Err() == nil {
		return
	}
	msg := celErrors(rule, expr, iss)
	if strings.Contains(msg, "there is no field") {
		var have []string
		if names, ok := fieldNames(env, "countersign.args."+tool); ok {
			have = append(have, "args: "+strings.Join(names, ", "))
		}
		for _, f := range facts {
			if names, ok := fieldNames(env, "countersign.facts."+tool+"."+f); ok {
				have = append(have, f+": "+strings.Join(names, ", "))
			}
		}
		if len(have) > 0 {
			msg += " (" + tool + " has " + strings.Join(have, "; ") + ")"
		}
	}
	if strings.Contains(msg, " cannot combine a ") {
		msg += " (a field is compared with a value of another type; see the tool's input schema)"
	}
	c.fail(path, "%s", msg)
}

func fieldNames(env *cel.Env, typeName string) ([]string, bool) {
	p, ok := env.CELTypeProvider().(*schemaTypes)
	if !ok {
		return nil, false
	}
	if _, ok := p.fields[typeName]; !ok {
		return nil, false
	}
	return p.FindStructFieldNames(typeName)
}

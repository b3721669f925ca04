package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/meshplane/meshplane/gateway/internal/apidocs"
)

// TestResponsesMatchSpec marshals every client-facing RPC's response type the
// way the gateway does, both with zero and with sample values in every
// field, and checks the JSON against the embedded OpenAPI definitions: no
// property the spec does not name, no null where the spec has a type, and
// JSON types as the spec says (int64 as strings, enums by name).
func TestResponsesMatchSpec(t *testing.T) {
	var spec struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(apidocs.EmbeddedSpec(), &spec); err != nil {
		t.Fatal(err)
	}
	check := func(name string, msg protoreflect.ProtoMessage, definition string) {
		b, err := jsonMarshaler.Marshal(msg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c := schemaChecker{t: t, defs: spec.Definitions}
		c.check(name, v, map[string]any{"$ref": "#/definitions/" + definition})
	}

	checked := 0
	for _, s := range clientServices {
		sd, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(s.name))
		if err != nil {
			t.Fatal(err)
		}
		methods := sd.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			out := methods.Get(i).Output()
			mt, err := protoregistry.GlobalTypes.FindMessageByName(out.FullName())
			if err != nil {
				t.Fatal(err)
			}
			for variant := range 3 {
				msg := mt.New()
				populate(msg, 0, variant)
				check(fmt.Sprintf("%s(variant %d)", out.Name(), variant), msg.Interface(), definitionName(out))
				checked++
			}
		}
	}
	if checked == 0 {
		t.Fatal("no response type checked")
	}

	st, err := status.New(codes.FailedPrecondition, "version mismatch").WithDetails(&errdetails.PreconditionFailure{
		Violations: []*errdetails.PreconditionFailure_Violation{{Type: versionMismatch, Subject: "a/b"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	check("error status", st.Proto(), "rpcStatus")
}

// definitionName is protoc-gen-openapiv2's default name for a message:
// the package's last component and the message's (nested) name.
func definitionName(md protoreflect.MessageDescriptor) string {
	pkg := string(md.ParentFile().Package())
	rel := strings.TrimPrefix(string(md.FullName()), pkg+".")
	return pkg[strings.LastIndex(pkg, ".")+1:] + strings.ReplaceAll(rel, ".", "")
}

// populate fills msg to depth 3: every message field with a (populated)
// message, every list and map with one element. Variant 0 leaves scalars at
// their zero value, others set samples; oneofs get member variant%n.
func populate(msg protoreflect.Message, depth, variant int) {
	fields := msg.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		oneof := fd.ContainingOneof()
		if oneof != nil && !oneof.IsSynthetic() && oneof.Fields().Get(variant%oneof.Fields().Len()) != fd {
			continue
		}
		switch {
		case fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Any":
			// Needs a registered type URL; errors carry real ones (checked above).
		case fd.IsMap():
			if depth < 3 && fd.MapKey().Kind() == protoreflect.StringKind {
				m := msg.Mutable(fd).Map()
				m.Set(protoreflect.ValueOfString("k").MapKey(), element(m.NewValue(), fd.MapValue(), depth, variant))
			}
		case fd.IsList():
			if depth < 3 {
				l := msg.Mutable(fd).List()
				l.Append(element(l.NewElement(), fd, depth, variant))
			}
		case fd.Message() != nil:
			if depth < 3 {
				populate(msg.Mutable(fd).Message(), depth+1, variant)
			}
		case variant > 0 || oneof != nil:
			msg.Set(fd, sample(fd))
		}
	}
}

// element fills a new list or map element of field fd.
func element(v protoreflect.Value, fd protoreflect.FieldDescriptor, depth, variant int) protoreflect.Value {
	if fd.Message() != nil {
		populate(v.Message(), depth+1, variant)
		return v
	}
	return sample(fd)
}

func sample(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		return protoreflect.ValueOfEnum(values.Get(values.Len() - 1).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(7)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(7)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(7)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(7)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(0.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(0.5)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("s")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte("b"))
	}
	panic(fmt.Sprintf("no sample for %v", fd.Kind()))
}

// schemaChecker checks decoded JSON against OpenAPI v2 schemas.
type schemaChecker struct {
	t    *testing.T
	defs map[string]map[string]any
}

func (c schemaChecker) check(path string, v any, schema map[string]any) {
	c.t.Helper()
	if ref, ok := schema["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/definitions/")
		if schema = c.defs[name]; schema == nil {
			c.t.Errorf("%s: the spec has no definition %s", path, name)
			return
		}
	}
	typ, _ := schema["type"].(string)
	props, _ := schema["properties"].(map[string]any)
	if v == nil {
		if typ != "" || props != nil {
			c.t.Errorf("%s: null, but the spec says %q %v", path, typ, schema)
		}
		return
	}
	switch {
	case props != nil || typ == "object":
		obj, ok := v.(map[string]any)
		if !ok {
			c.t.Errorf("%s: %v is not an object", path, v)
			return
		}
		for key, value := range obj {
			if ps, ok := props[key].(map[string]any); ok {
				c.check(path+"."+key, value, ps)
			} else if extra, ok := schema["additionalProperties"].(map[string]any); ok {
				c.check(path+"["+key+"]", value, extra)
			} else if props != nil && schema["additionalProperties"] == nil {
				c.t.Errorf("%s: property %q is not in the spec", path, key)
			}
		}
	case typ == "array":
		arr, ok := v.([]any)
		if !ok {
			c.t.Errorf("%s: %v is not an array", path, v)
			return
		}
		items, _ := schema["items"].(map[string]any)
		for i, item := range arr {
			c.check(fmt.Sprintf("%s[%d]", path, i), item, items)
		}
	case typ == "string":
		s, ok := v.(string)
		if !ok {
			c.t.Errorf("%s: %v is not a string", path, v)
			return
		}
		if enum, ok := schema["enum"].([]any); ok && !contains(enum, s) {
			c.t.Errorf("%s: %q is not one of %v", path, s, enum)
		}
	case typ == "integer" || typ == "number":
		if _, ok := v.(float64); !ok {
			c.t.Errorf("%s: %v is not a number", path, v)
		}
	case typ == "boolean":
		if _, ok := v.(bool); !ok {
			c.t.Errorf("%s: %v is not a boolean", path, v)
		}
	}
}

func contains(list []any, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}

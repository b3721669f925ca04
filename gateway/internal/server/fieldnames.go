package server

import (
	"errors"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// jsonFieldNames gives the control plane's INVALID_ARGUMENT errors the field
// names of REST: the plane names fields the proto way ("retry_policy.max_attempts",
// "requests[1].target.capability", "metadata['team_id']"), a REST client by
// their JSON names ("retryPolicy.maxAttempts"). Each field path of a
// google.rpc.BadRequest detail is rewritten segment by segment (see
// jsonFieldPath) against in, the request message of the route (nil when
// unknown). The message is rebuilt from the rewritten violations when, and
// only when, it is exactly the plane's join of the original ones
// ("field: description; field: description"); any other message is left as
// it is, and so are the descriptions and every other detail.
//
// Errors without a BadRequest detail, or of another code, are returned as
// they are, so the gateway's own 400s (which name the fields as the client
// sent them, and get their detail later, in describeBadRequest) are not
// touched. Only REST answers go through here: the gRPC ingress forwards the
// plane's status unchanged.
func jsonFieldNames(err error, in protoreflect.MessageDescriptor) error {
	var withStatus *runtime.HTTPStatusError
	inner := err
	if errors.As(err, &withStatus) {
		inner = withStatus.Err
	}
	st, ok := status.FromError(inner)
	if !ok {
		return err
	}
	translated, changed := jsonFieldNamesStatus(st, in)
	if !changed {
		return err
	}
	if withStatus != nil {
		return &runtime.HTTPStatusError{HTTPStatus: withStatus.HTTPStatus, Err: translated.Err()}
	}
	return translated.Err()
}

// jsonFieldNamesStatus is jsonFieldNames for a status; it reports whether
// anything changed.
func jsonFieldNamesStatus(st *status.Status, in protoreflect.MessageDescriptor) (*status.Status, bool) {
	if st.Code() != codes.InvalidArgument {
		return st, false
	}
	p := st.Proto() // a copy
	var original, renamed []string
	changed := false
	for i, detail := range p.GetDetails() {
		if !detail.MessageIs((*errdetails.BadRequest)(nil)) {
			continue
		}
		bad := &errdetails.BadRequest{}
		if detail.UnmarshalTo(bad) != nil {
			continue
		}
		detailChanged := false
		for _, v := range bad.GetFieldViolations() {
			original = append(original, v.GetField()+": "+v.GetDescription())
			if field := jsonFieldPath(in, v.GetField()); field != v.GetField() {
				v.Field, detailChanged = field, true
			}
			renamed = append(renamed, v.GetField()+": "+v.GetDescription())
		}
		if !detailChanged {
			continue
		}
		packed, err := anypb.New(bad)
		if err != nil {
			continue
		}
		p.Details[i], changed = packed, true
	}
	if !changed {
		return st, false
	}
	if p.GetMessage() == strings.Join(original, "; ") {
		p.Message = strings.Join(renamed, "; ")
	}
	return status.FromProto(p), true
}

// jsonFieldPath rewrites a field path the proto way into one of JSON names:
// each name segment becomes its field's JSON name (FieldDescriptor.JSONName,
// which honours a json_name option) while the path resolves through the
// message md, from the request message down (into message fields, list
// elements after "[i]", map values after "['key']"); a segment that does not
// resolve, and every one after it, gets the plain snake_case → lowerCamelCase
// conversion protoc applies ("end_time" → "endTime"). Subscripts ("[1]",
// "['team_id']", "[\"it's\"]") are kept as they are, so are separators. A
// path whose brackets or quotes do not close is returned as it is.
func jsonFieldPath(md protoreflect.MessageDescriptor, path string) string {
	var b strings.Builder
	cur := md                           // where the next name resolves; nil once off the descriptors
	var at protoreflect.FieldDescriptor // the field the path is at, nil when unknown
	element := false                    // at a list element or map value of at, not at itself
	for i := 0; i < len(path); {
		switch path[i] {
		case '.':
			cur = nil
			switch {
			case at == nil:
			case !element && !at.IsList() && !at.IsMap():
				cur = at.Message()
			case element && at.IsList():
				cur = at.Message()
			case element && at.IsMap():
				cur = at.MapValue().Message()
			}
			at, element = nil, false
			b.WriteByte('.')
			i++
		case '[':
			end := subscriptEnd(path, i)
			if end < 0 {
				return path
			}
			if at != nil && !element && (at.IsList() || at.IsMap()) {
				element = true
			} else {
				at = nil
			}
			b.WriteString(path[i:end])
			i = end
		default:
			end := i
			for end < len(path) && path[end] != '.' && path[end] != '[' {
				end++
			}
			name := path[i:end]
			at, element = nil, false
			if cur != nil {
				at = fieldNamed(cur, name)
			}
			if at != nil {
				b.WriteString(at.JSONName())
			} else {
				b.WriteString(lowerCamel(name))
			}
			cur = nil
			i = end
		}
	}
	return b.String()
}

// subscriptEnd returns the index just past the subscript that starts with the
// "[" at path[start], or -1 if it does not close. Quoted keys (in ' or ", with
// backslash escapes, as Python's repr writes them) may hold "]" and ".".
func subscriptEnd(path string, start int) int {
	var quote byte
	for i := start + 1; i < len(path); i++ {
		c := path[i]
		switch {
		case quote != 0 && c == '\\':
			i++
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == ']':
			return i + 1
		}
	}
	return -1
}

// lowerCamel converts a proto field name to the JSON name protoc derives
// from it: each "_" dropped and the letter after it upper-cased
// ("start_to_close" → "startToClose"); names without "_" are kept.
func lowerCamel(name string) string {
	if !strings.Contains(name, "_") {
		return name
	}
	var b strings.Builder
	upper := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_':
			upper = true
			continue
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		}
		upper = false
		b.WriteByte(c)
	}
	return b.String()
}

package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// versionMismatch is the PreconditionFailure violation type with which the
// control plane reports a failed state compare-and-set.
const versionMismatch = "VERSION_MISMATCH"

// newErrorHandler renders a gRPC error as grpc-gateway does by default (HTTP
// status from the gRPC code, google.rpc.Status JSON body), except that:
//   - a version conflict answers 412 Precondition Failed instead of 400;
//   - the control plane's INVALID_ARGUMENT names fields by their JSON names,
//     as REST clients do, not the proto way (see jsonFieldNames);
//   - the gateway's own INVALID_ARGUMENT about a request's query or body gets
//     a google.rpc.BadRequest naming the field (see describeBadRequest);
//   - on a streaming route (WatchTask, Subscribe) the body is one
//     {"error": <status>} line, as for a stream the control plane fails
//     before its first message, so that clients read one format there.
//
// A 401's WWW-Authenticate challenge is set by challengeWriter.
func newErrorHandler(routes []route) runtime.ErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
		rt := routeFor(routes, r)
		err = jsonFieldNames(err, rt.input())
		err = describeBadRequest(err, r, rt)
		if isVersionMismatch(err) {
			err = &runtime.HTTPStatusError{HTTPStatus: http.StatusPreconditionFailed, Err: err}
		}
		if rt != nil && rt.streaming() {
			m = streamErrorMarshaler{m}
		}
		runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
	}
}

// newStreamErrorHandler converts an error the upstream ends a REST stream
// with (the {"error": …} line, after a 200 or, when the stream fails before
// its first message, as the whole answer) as grpc-gateway does by default,
// with the control plane's field paths in JSON names, as newErrorHandler
// does for the other errors.
func newStreamErrorHandler(routes []route) runtime.StreamErrorHandlerFunc {
	return func(ctx context.Context, err error) *status.Status {
		st := runtime.DefaultStreamErrorHandler(ctx, err)
		method, _ := runtime.RPCMethod(ctx)
		st, _ = jsonFieldNamesStatus(st, methodInput(routes, method))
		return st
	}
}

// streamErrorMarshaler renders the error status as grpc-gateway renders a
// stream's error: {"error": <status>} and a newline.
type streamErrorMarshaler struct {
	runtime.Marshaler
}

func (s streamErrorMarshaler) Marshal(v any) ([]byte, error) {
	if st, ok := v.(*spb.Status); ok {
		v = map[string]proto.Message{"error": st}
	}
	b, err := s.Marshaler.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// isVersionMismatch reports whether err is FAILED_PRECONDITION carrying a
// google.rpc.PreconditionFailure with a VERSION_MISMATCH violation.
func isVersionMismatch(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return false
	}
	for _, detail := range st.Details() {
		pf, ok := detail.(*errdetails.PreconditionFailure)
		if !ok {
			continue
		}
		for _, v := range pf.GetViolations() {
			if v.GetType() == versionMismatch {
				return true
			}
		}
	}
	return false
}

// describeBadRequest gives the INVALID_ARGUMENT errors the gateway makes
// itself (they carry no details; the plane's always do) the field at fault,
// as the client named it, in a google.rpc.BadRequest, and a message such as
// "pageSize: invalid value \"abc\" (want int32)":
//   - for a body, from what bodyJSON left on the request's body;
//   - for a route without a body, by parsing each query parameter again.
//
// Other errors are returned as they are.
func describeBadRequest(err error, r *http.Request, rt *route) error {
	var withStatus *runtime.HTTPStatusError
	inner := err
	if errors.As(err, &withStatus) {
		inner = withStatus.Err
	}
	st, ok := status.FromError(inner)
	if !ok || st.Code() != codes.InvalidArgument || len(st.Proto().GetDetails()) > 0 {
		return err
	}
	var problem *badRequest
	if body, ok := r.Body.(*requestBody); ok && body.problem != nil && body.problem.Error() == st.Message() {
		problem = body.problem
	} else if rt != nil && rt.rpc != nil && !rt.body {
		problem = queryProblem(rt.rpc.Input(), r.URL.Query())
	}
	if problem == nil {
		return err
	}
	described := problem.status().Err()
	if withStatus != nil {
		return &runtime.HTTPStatusError{HTTPStatus: withStatus.HTTPStatus, Err: described}
	}
	return described
}

// status returns b as an INVALID_ARGUMENT status, with a BadRequest detail
// when it names fields.
func (b *badRequest) status() *status.Status {
	st := status.New(codes.InvalidArgument, b.Error())
	if len(b.violations) == 0 {
		return st
	}
	detail := &errdetails.BadRequest{}
	for _, v := range b.violations {
		detail.FieldViolations = append(detail.FieldViolations,
			&errdetails.BadRequest_FieldViolation{Field: v.field, Description: v.description})
	}
	if withDetail, err := st.WithDetails(detail); err == nil {
		return withDetail
	}
	return st
}

// queryProblem parses the query parameters into a message of type in the way
// the generated handlers do, each parameter alone, and returns the ones that
// fail, or nil when none does.
func queryProblem(in protoreflect.MessageDescriptor, query url.Values) *badRequest {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(in.FullName())
	if err != nil {
		return nil
	}
	noFilter := utilities.NewDoubleArray(nil)
	parse := func(values url.Values) error {
		return (&runtime.DefaultQueryParser{}).Parse(mt.New().Interface(), values, noFilter)
	}
	var found []violation
	for _, key := range slices.Sorted(maps.Keys(query)) {
		values := query[key]
		err := parse(url.Values{key: values})
		if err == nil {
			continue
		}
		fd := queryField(in, key)
		description := err.Error() // e.g. `invalid path: "x" is not a message` (for "pageSize.x")
		if fd != nil {
			description = fmt.Sprintf("too many values (%s)", strings.Join(values, ", "))
			for _, v := range values {
				if parse(url.Values{key: {v}}) != nil {
					description = describeQueryValue(fd, v)
					break
				}
			}
		}
		found = append(found, violation{key, description})
	}
	if len(found) > 0 {
		return &badRequest{violations: found}
	}
	if err := parse(query); err != nil {
		return &badRequest{message: err.Error()} // between parameters: "duplicate field …" (pageSize and page_size)
	}
	return nil
}

// describeQueryValue says what is wrong with the query value v of field fd,
// without the Go parser's own words.
func describeQueryValue(fd protoreflect.FieldDescriptor, v string) string {
	switch {
	case fd.IsMap():
		return fmt.Sprintf("invalid value %q", v)
	case fd.Kind() == protoreflect.EnumKind:
		return fmt.Sprintf("unknown value %q", v)
	case fd.Message() != nil:
		switch fd.Message().FullName() {
		case "google.protobuf.Timestamp":
			return fmt.Sprintf("invalid value %q (want an RFC 3339 timestamp)", v)
		case "google.protobuf.Duration":
			return fmt.Sprintf("invalid value %q (want a duration such as 1.5s)", v)
		}
		return fmt.Sprintf("invalid value %q (want %s)", v, fd.Message().FullName())
	}
	return fmt.Sprintf("invalid value %q (want %s)", v, fd.Kind())
}

// queryField resolves a query parameter's name ("pageSize", "page_size",
// "target.capability", "labels[k]") to its field, as grpc-gateway does.
func queryField(md protoreflect.MessageDescriptor, key string) protoreflect.FieldDescriptor {
	key, _, _ = strings.Cut(key, "[")
	var fd protoreflect.FieldDescriptor
	for _, name := range strings.Split(key, ".") {
		if fd != nil {
			if fd.Message() == nil || fd.IsList() || fd.IsMap() {
				return nil
			}
			md = fd.Message()
		}
		if fd = fieldNamed(md, name); fd == nil {
			return nil
		}
	}
	return fd
}

// fieldNamed finds md's field by the name a client may use for it: the proto
// name ("page_size") or the JSON name ("pageSize"), as protojson and
// grpc-gateway's query parser accept both.
func fieldNamed(md protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByTextName(name); fd != nil {
		return fd
	}
	return md.Fields().ByJSONName(name)
}

// writeError answers a request the gateway refuses itself (before any gRPC
// call) with the same status-shaped body as upstream errors.
func writeError(mux *runtime.ServeMux, w http.ResponseWriter, r *http.Request, httpStatus int, st *status.Status) {
	_, outbound := runtime.MarshalerForRequest(mux, r)
	runtime.HTTPError(r.Context(), mux, outbound, w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: st.Err()})
}

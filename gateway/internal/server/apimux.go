package server

import (
	"net/textproto"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
)

// jsonMarshaler renders messages as proto3 JSON with camelCase names (as the
// OpenAPI spec names them). Default values of plain scalars, lists and maps
// are emitted ("attempt": 0, "entries": []) but unset message fields and
// oneofs are left out rather than written as null, which the OpenAPI v2 spec
// cannot express. Unknown request fields are ignored, as grpc-gateway does by
// default, so older gateways accept newer clients.
var jsonMarshaler = &runtime.HTTPBodyMarshaler{
	Marshaler: &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitDefaultValues: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	},
}

// newAPIMux returns the grpc-gateway mux, without services registered.
func newAPIMux() *runtime.ServeMux {
	return runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, jsonMarshaler),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithIncomingHeaderMatcher(incomingHeader),
	)
}

// incomingHeader decides which HTTP request headers become gRPC metadata.
func incomingHeader(key string) (string, bool) {
	switch textproto.CanonicalMIMEHeaderKey(key) {
	case "Authorization":
		// grpc-gateway always forwards it as "authorization"; matching it here
		// too would send the credential twice.
		return "", false
	case requestIDHeader:
		return "x-request-id", true
	}
	return runtime.DefaultHeaderMatcher(key)
}

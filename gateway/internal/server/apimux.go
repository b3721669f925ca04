package server

import (
	"context"
	"fmt"
	"net/http"
	"net/textproto"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
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
func newAPIMux() (*runtime.ServeMux, error) {
	routes, err := clientRoutes()
	if err != nil {
		return nil, fmt.Errorf("reading the HTTP rules of the client services: %w", err)
	}
	return runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, jsonMarshaler),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithRoutingErrorHandler(routingErrorHandler(routes)),
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		runtime.WithForwardResponseOption(streamContentType),
	), nil
}

// streamContentType types a server stream's response before its first
// message. grpc-gateway sets Content-Type only with the first message, so a
// stream that ends without one (a watch resumed after the terminal event)
// would be an untyped 200. Called with a nil message only for that prelude.
func streamContentType(_ context.Context, w http.ResponseWriter, resp proto.Message) error {
	if resp == nil && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	return nil
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

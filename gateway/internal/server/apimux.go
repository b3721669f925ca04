package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// jsonMarshaler renders messages as proto3 JSON with camelCase names (as the
// OpenAPI spec names them). Default values of plain scalars, lists and maps
// are emitted ("attempt": 0, "entries": []) but unset message fields and
// oneofs are left out rather than written as null, which the OpenAPI v2 spec
// cannot express. Request bodies are read by bodyJSON: unknown fields are
// ignored, as grpc-gateway does by default, so older gateways accept newer
// clients; unknown enum names are refused.
var jsonMarshaler = &runtime.HTTPBodyMarshaler{
	Marshaler: &bodyJSON{JSONPb: runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitDefaultValues: true},
		UnmarshalOptions: lenientJSON, // for values other than messages only
	}},
}

// newAPIMux returns the grpc-gateway mux, without services registered.
func newAPIMux() (*runtime.ServeMux, error) {
	routes, err := clientRoutes()
	if err != nil {
		return nil, fmt.Errorf("reading the HTTP rules of the client services: %w", err)
	}
	var mux *runtime.ServeMux
	mux = runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, jsonMarshaler),
		runtime.WithErrorHandler(newErrorHandler(routes)),
		runtime.WithStreamErrorHandler(newStreamErrorHandler(routes)),
		runtime.WithRoutingErrorHandler(routingErrorHandler(routes)),
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		runtime.WithOutgoingHeaderMatcher(outgoingMetadata(runtime.MetadataHeaderPrefix)),
		runtime.WithOutgoingTrailerMatcher(outgoingMetadata(runtime.MetadataTrailerPrefix)),
		runtime.WithForwardResponseOption(streamContentType),
		runtime.WithMiddlewares(func(next runtime.HandlerFunc) runtime.HandlerFunc {
			return apiHandler(func() *runtime.ServeMux { return mux }, routes, next)
		}),
	)
	return mux, nil
}

// apiHandler runs before each generated handler, once grpc-gateway has picked
// it for r.
func apiHandler(mux func() *runtime.ServeMux, routes []route, next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, pathParams map[string]string) {
		// "/v1/tasks/t-1:cancel" names CancelTask (POST), whatever the method:
		// a GET is refused, not served by GetTask for the task "t-1:cancel".
		if allow := customVerbMethods(routes, r); allow != nil && !slices.Contains(allow, r.Method) {
			_, outbound := runtime.MarshalerForRequest(mux(), r)
			methodNotAllowed(r.Context(), mux(), outbound, w, r, allow)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &requestBody{ReadCloser: r.Body}
		}
		next(&challengeWriter{ResponseWriter: w, r: r}, r, pathParams)
	}
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

// outgoingMetadata decides which gRPC response metadata (headers or trailers)
// become HTTP headers, as prefix+key (grpc-gateway's Grpc-Metadata- and
// Grpc-Trailer-): the application's metadata, not the transport's own
// (content-type, te, pseudo-headers, and the grpc- names the gRPC protocol
// reserves: grpc-accept-encoding, grpc-encoding, grpc-status-details-bin, …).
func outgoingMetadata(prefix string) runtime.HeaderMatcherFunc {
	return func(key string) (string, bool) {
		key = strings.ToLower(key)
		switch {
		case key == "content-type", key == "te", strings.HasPrefix(key, ":"), strings.HasPrefix(key, "grpc-"):
			return "", false
		}
		return prefix + key, true
	}
}

// challengeWriter gives a 401 an RFC 6750 challenge, in place of
// grpc-gateway's copy of the status message ("missing or invalid bearer token
// …" is no challenge). It sees every 401 of a generated handler, a stream's
// included (those are not written by the error handler).
type challengeWriter struct {
	http.ResponseWriter
	r *http.Request
}

func (c *challengeWriter) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		c.Header().Set("WWW-Authenticate", bearerChallenge(c.r))
	}
	c.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the real writer, which
// grpc-gateway relies on to flush each message of a stream.
func (c *challengeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// bearerChallenge is the WWW-Authenticate value of a 401 to r (RFC 6750,
// section 3): error="invalid_token" when r presented a bearer token, no error
// when it presented none (no Authorization header, or another scheme).
func bearerChallenge(r *http.Request) string {
	const challenge = `Bearer realm="meshplane"`
	scheme, _, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if strings.EqualFold(scheme, "Bearer") {
		return challenge + `, error="invalid_token"`
	}
	return challenge
}

// requestBody wraps a request body so that bodyJSON can leave the details of
// a decoding error (the field) for the error handler: the generated handlers
// pass on only the error's text, as INVALID_ARGUMENT.
type requestBody struct {
	io.ReadCloser
	problem *badRequest
}

// badRequest is a request the gateway refuses as INVALID_ARGUMENT itself, with
// the fields at fault where they are known.
type badRequest struct {
	violations []violation // empty when no field can be named
	message    string      // used when there are no violations
}

type violation struct{ field, description string }

func (b *badRequest) Error() string {
	if len(b.violations) == 0 {
		return b.message
	}
	parts := make([]string, len(b.violations))
	for i, v := range b.violations {
		parts[i] = v.field + ": " + v.description
	}
	return strings.Join(parts, "; ")
}

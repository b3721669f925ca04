package server

import (
	"context"
	"net/http"
	"slices"
)

// withHeadAsGet answers HEAD on the API's routes as the GET of the same URL
// would be answered, without the body (RFC 9110, section 9.3.2): load
// balancers and monitors probe with HEAD, and grpc-gateway routes only the
// methods of the google.api.http rules, so HEAD would get 405.
//
// The request goes on as a GET. net/http sends a HEAD response's headers and
// drops whatever body the handler writes. The upstream call ends once the
// response starts: a HEAD on a stream (":watch", ":subscribe") gets the
// stream's status and headers, not a connection held open for its messages.
func withHeadAsGet(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		ctx, endCall := context.WithCancel(r.Context())
		defer endCall()
		get := r.Clone(ctx)
		get.Method = http.MethodGet
		next.ServeHTTP(&headResponse{ResponseWriter: w, answered: endCall}, get)
	})
}

// headResponse ends a HEAD's upstream call at the first write of its response
// body: the status and headers are decided by then.
type headResponse struct {
	http.ResponseWriter
	answered context.CancelFunc
}

func (h *headResponse) Write(p []byte) (int, error) {
	n, err := h.ResponseWriter.Write(p)
	h.answered()
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer (grpc-gateway
// flushes each message of a stream through it).
func (h *headResponse) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// withHead adds HEAD to methods (sorted) that include GET: every GET route
// answers HEAD too, so an Allow header lists it.
func withHead(methods []string) []string {
	if !slices.Contains(methods, http.MethodGet) || slices.Contains(methods, http.MethodHead) {
		return methods
	}
	methods = append(slices.Clone(methods), http.MethodHead)
	slices.Sort(methods)
	return methods
}

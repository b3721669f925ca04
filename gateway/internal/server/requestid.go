package server

import (
	"crypto/rand"
	"net/http"
)

// requestIDHeader carries a request's id: taken from the client when it sends
// a usable one, generated otherwise; echoed in the response and forwarded to
// the control plane as "x-request-id" metadata.
const requestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds a client-chosen id.
const maxRequestIDLen = 128

func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !validRequestID(id) {
			id = rand.Text()
			r = r.Clone(r.Context())
			r.Header.Set(requestIDHeader, id)
		}
		w.Header().Set(requestIDHeader, id)
		next.ServeHTTP(w, r)
	})
}

// validRequestID accepts 1 to maxRequestIDLen visible ASCII characters, which
// are also valid gRPC metadata and safe to log.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := range len(id) {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

package server

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// withBodyLimit refuses request bodies over limit bytes with 413 and a
// status-shaped body (code RESOURCE_EXHAUSTED). A declared Content-Length is
// checked before anything is read; a chunked body is read up to the limit
// (grpc-gateway decodes whole bodies anyway).
func withBodyLimit(limit int64, reject func(http.ResponseWriter, *http.Request, int, *status.Status), next http.Handler) http.Handler {
	tooLarge := func(w http.ResponseWriter, r *http.Request) {
		reject(w, r, http.StatusRequestEntityTooLarge, status.New(codes.ResourceExhausted, fmt.Sprintf("request body is larger than %d bytes", limit)))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			tooLarge(w, r)
			return
		}
		if r.ContentLength < 0 {
			body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
			if err != nil {
				reject(w, r, http.StatusBadRequest, status.New(codes.InvalidArgument, "reading request body: "+err.Error()))
				return
			}
			if int64(len(body)) > limit {
				tooLarge(w, r)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		next.ServeHTTP(w, r)
	})
}

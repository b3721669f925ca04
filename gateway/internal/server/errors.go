package server

import (
	"context"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// versionMismatch is the PreconditionFailure violation type with which the
// control plane reports a failed state compare-and-set.
const versionMismatch = "VERSION_MISMATCH"

// errorHandler renders a gRPC error as grpc-gateway does by default (HTTP
// status from the gRPC code, google.rpc.Status JSON body) with one exception:
// a version conflict answers 412 Precondition Failed instead of 400.
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if isVersionMismatch(err) {
		err = &runtime.HTTPStatusError{HTTPStatus: http.StatusPreconditionFailed, Err: err}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
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

// writeError answers a request the gateway refuses itself (before any gRPC
// call) with the same status-shaped body as upstream errors.
func writeError(mux *runtime.ServeMux, w http.ResponseWriter, r *http.Request, httpStatus int, st *status.Status) {
	_, outbound := runtime.MarshalerForRequest(mux, r)
	runtime.HTTPError(r.Context(), mux, outbound, w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: st.Err()})
}

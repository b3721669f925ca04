package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// statusBody is the google.rpc.Status JSON the gateway answers errors with.
type statusBody struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Details []map[string]any `json:"details"`
}

func decodeStatus(t *testing.T, body []byte) statusBody {
	t.Helper()
	var st statusBody
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, body)
	}
	if st.Details == nil {
		t.Errorf("details should be present (possibly empty): %s", body)
	}
	return st
}

func TestErrorMapping(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	for _, tc := range []struct {
		name, method, path, body string
		httpStatus               int
		code                     codes.Code
	}{
		{"not found", http.MethodGet, "/v1/tasks/missing", "", http.StatusNotFound, codes.NotFound},
		{"internal", http.MethodGet, "/v1/tasks/boom", "", http.StatusInternalServerError, codes.Internal},
		{"invalid argument", http.MethodPost, "/v1/tasks", `{}`, http.StatusBadRequest, codes.InvalidArgument},
		{"malformed JSON", http.MethodPost, "/v1/tasks", `{"target":`, http.StatusBadRequest, codes.InvalidArgument},
		{"unimplemented RPC", http.MethodGet, "/v1/channels", "", http.StatusNotImplemented, codes.Unimplemented},
		{"unknown route", http.MethodGet, "/v1/nothing-here", "", http.StatusNotFound, codes.NotFound},
		{"wrong method", http.MethodDelete, "/v1/tasks", "", http.StatusMethodNotAllowed, codes.Unimplemented},
		{"plain FAILED_PRECONDITION stays 400", http.MethodPut, "/v1/namespaces/demo/states/plain-precondition",
			`{"value": {"json": 1}}`, http.StatusBadRequest, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, newRequest(t, tc.method, gw.URL+tc.path, strings.NewReader(tc.body)))
			if resp.StatusCode != tc.httpStatus {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.httpStatus, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("error response lacks X-Request-Id")
			}
			if st := decodeStatus(t, body); codes.Code(st.Code) != tc.code || st.Message == "" {
				t.Errorf("body %s, want code %d (%s) and a message", body, tc.code, tc.code)
			}
		})
	}
}

func TestVersionMismatchIs412(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)

	req := newRequest(t, http.MethodPut, gw.URL+"/v1/namespaces/demo/states/counter",
		strings.NewReader(`{"value": {"json": 2}, "expectedVersion": "3"}`))
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("status %d, want 412: %s", resp.StatusCode, body)
	}
	st := decodeStatus(t, body)
	if codes.Code(st.Code) != codes.FailedPrecondition || st.Message != "version mismatch" || len(st.Details) != 1 {
		t.Fatalf("body %s", body)
	}
	detail := st.Details[0]
	if detail["@type"] != "type.googleapis.com/google.rpc.PreconditionFailure" {
		t.Errorf("detail @type = %v", detail["@type"])
	}
	violations, _ := detail["violations"].([]any)
	if len(violations) != 1 || violations[0].(map[string]any)["type"] != "VERSION_MISMATCH" ||
		violations[0].(map[string]any)["subject"] != "demo/counter" {
		t.Errorf("violations = %v", detail["violations"])
	}

	// The matching version succeeds.
	req = newRequest(t, http.MethodPut, gw.URL+"/v1/namespaces/demo/states/counter",
		strings.NewReader(`{"value": {"json": 2}, "expectedVersion": "1"}`))
	if resp, body := do(t, req); resp.StatusCode != http.StatusOK {
		t.Errorf("status %d: %s", resp.StatusCode, body)
	}
}

func TestIsVersionMismatch(t *testing.T) {
	withDetails := func(c codes.Code, details ...*errdetails.PreconditionFailure_Violation) error {
		st, err := status.New(c, "x").WithDetails(&errdetails.PreconditionFailure{Violations: details})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	mismatch := &errdetails.PreconditionFailure_Violation{Type: "VERSION_MISMATCH"}
	other := &errdetails.PreconditionFailure_Violation{Type: "TOS"}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"mismatch", withDetails(codes.FailedPrecondition, mismatch), true},
		{"mismatch among others", withDetails(codes.FailedPrecondition, other, mismatch), true},
		{"wrapped", fmt.Errorf("call: %w", withDetails(codes.FailedPrecondition, mismatch)), true},
		{"other violation", withDetails(codes.FailedPrecondition, other), false},
		{"no details", status.Error(codes.FailedPrecondition, "x"), false},
		{"other code", withDetails(codes.Aborted, mismatch), false},
		{"not a status", errors.New("plain"), false},
	} {
		if got := isVersionMismatch(tc.err); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A 401 carries an RFC 6750 challenge, not the status message: with
// error="invalid_token" only when a bearer token was presented. Streams too.
func TestUnauthenticatedHasBearerChallenge(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	for _, path := range []string{"/v1/tasks/unauthenticated", "/v1/tasks/unauthenticated:watch"} {
		for _, tc := range []struct{ authorization, want string }{
			{"", `Bearer realm="meshplane"`},
			{"Bearer wrong", `Bearer realm="meshplane", error="invalid_token"`},
			{"bearer wrong", `Bearer realm="meshplane", error="invalid_token"`},
			{"Basic dXNlcjpwdw==", `Bearer realm="meshplane"`},
		} {
			req := newRequest(t, http.MethodGet, gw.URL+path, nil)
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			resp, body := do(t, req)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s, Authorization %q: status %d, want 401: %s", path, tc.authorization, resp.StatusCode, body)
				continue
			}
			if got := resp.Header.Values("WWW-Authenticate"); len(got) != 1 || got[0] != tc.want {
				t.Errorf("%s, Authorization %q: WWW-Authenticate %q, want %q", path, tc.authorization, got, tc.want)
			}
		}
	}
}

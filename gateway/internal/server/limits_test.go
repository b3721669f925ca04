package server

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const testBodyLimit = 1024

// bigSubmit is a valid SubmitTask body of at least n bytes.
func bigSubmit(n int) string {
	return `{"target": {"capability": "text.echo"}, "input": {"json": "` + strings.Repeat("x", n) + `"}}`
}

func TestBodyLimit(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr, "--max-request-bytes", "1024")

	for _, tc := range []struct {
		name    string
		body    string
		chunked bool
		want    int
	}{
		{"small, with length", bigSubmit(10), false, http.StatusOK},
		{"small, chunked", bigSubmit(10), true, http.StatusOK},
		{"exactly the limit", bigSubmit(testBodyLimit - len(bigSubmit(0))), true, http.StatusOK},
		{"large, with length", bigSubmit(testBodyLimit), false, http.StatusRequestEntityTooLarge},
		{"large, chunked", bigSubmit(testBodyLimit), true, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			req := newRequest(t, http.MethodPost, gw.URL+"/v1/tasks", body)
			resp, got := do(t, req)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, got)
			}
			if tc.want == http.StatusRequestEntityTooLarge {
				st := decodeStatus(t, got)
				if codes.Code(st.Code) != codes.ResourceExhausted || !strings.Contains(st.Message, "1024") {
					t.Errorf("body %s", got)
				}
			}
		})
	}
}

// TestBodyLimitUnknownLength covers the chunked path directly: the body is
// read up to the limit and handed on with its length known.
func TestBodyLimitUnknownLength(t *testing.T) {
	var rejected int
	var passed string
	h := withBodyLimit(4, func(w http.ResponseWriter, _ *http.Request, code int, _ *status.Status) {
		rejected = code
	}, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		passed = fmt.Sprintf("%d:%s", r.ContentLength, b)
	}))
	for _, tc := range []struct{ body, passed string }{{"abcd", "4:abcd"}, {"abcde", ""}} {
		rejected, passed = 0, ""
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
		req.ContentLength = -1
		h.ServeHTTP(httptest.NewRecorder(), req)
		if passed != tc.passed || (tc.passed == "") != (rejected == http.StatusRequestEntityTooLarge) {
			t.Errorf("body %q: passed %q, rejected %d", tc.body, passed, rejected)
		}
	}
}

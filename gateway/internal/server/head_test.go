package server

import (
	"context"
	"net/http"
	"slices"
	"testing"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// HEAD on a GET route answers as the GET does, status and headers, without a body.
func TestHeadAnswersAsGetWithoutBody(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/v1/tasks/t-1", http.StatusOK},
		{"/v1/tasks", http.StatusOK},
		{"/v1/agents", http.StatusOK},
		{"/v1/tasks/missing", http.StatusNotFound},
		{"/v1/tasks/unauthenticated", http.StatusUnauthorized},
	} {
		get, getBody := do(t, newRequest(t, http.MethodGet, gw.URL+tc.path, nil))
		head, headBody := do(t, newRequest(t, http.MethodHead, gw.URL+tc.path, nil))
		if get.StatusCode != tc.status || head.StatusCode != tc.status {
			t.Errorf("%s: GET %d, HEAD %d; want %d for both", tc.path, get.StatusCode, head.StatusCode, tc.status)
			continue
		}
		if len(headBody) != 0 {
			t.Errorf("HEAD %s: body %q, want none", tc.path, headBody)
		}
		if head.ContentLength != int64(len(getBody)) {
			t.Errorf("HEAD %s: Content-Length %d, want the GET's %d", tc.path, head.ContentLength, len(getBody))
		}
		for _, name := range []string{"Content-Type", "Www-Authenticate", "Grpc-Metadata-X-Served-By"} {
			if head.Header.Get(name) != get.Header.Get(name) {
				t.Errorf("HEAD %s: %s %q, GET has %q", tc.path, name, head.Header.Get(name), get.Header.Get(name))
			}
		}
		if head.Header.Get("X-Request-Id") == "" {
			t.Errorf("HEAD %s: no X-Request-Id", tc.path)
		}
	}
	if got := up.metadata("/meshplane.v1.TaskService/GetTask").Get("x-request-id"); len(got) != 1 {
		t.Errorf("HEAD reached GetTask with x-request-id %q, want the request's id", got)
	}
}

// HEAD on a stream answers with the stream's status and headers, and ends the
// upstream stream instead of holding it open as the GET would.
func TestHeadOnStreamEndsTheUpstreamStream(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)

	up.watch <- event(1, meshplanev1.TaskState_TASK_STATE_RUNNING) // the scripted watch never ends by itself
	ctx, cancel := context.WithTimeout(t.Context(), streamTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, gw.URL+"/v1/tasks/scripted:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || len(body) != 0 {
		t.Errorf("HEAD watch: status %d, Content-Type %q, body %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	waitFor(t, "the upstream watch to end", func() bool { return up.streamsEnded.Load() == 1 })

	// A stream refused before its first message: the GET's error status.
	if resp, _ := do(t, newRequest(t, http.MethodHead, gw.URL+"/v1/tasks/nope:watch", nil)); resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD watch of an unknown task: status %d, want 404", resp.StatusCode)
	}
}

// HEAD is allowed where GET is, and listed with it in Allow; where GET is not
// (a custom method's path), HEAD gets 405 too.
func TestHeadInAllow(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodDelete, "/v1/tasks/t-1", "GET, HEAD"},
		{http.MethodHead, "/v1/tasks/t-1:cancel", "POST"},
		{http.MethodHead, "/v1/tasks:batchSubmit", "POST"},
	} {
		resp, _ := do(t, newRequest(t, tc.method, gw.URL+tc.path, nil))
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: status %d, Allow %q; want 405, %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), tc.allow)
		}
	}
	for _, tc := range []struct{ in, want []string }{
		{[]string{http.MethodGet}, []string{http.MethodGet, http.MethodHead}},
		{[]string{http.MethodDelete, http.MethodGet, http.MethodPut}, []string{http.MethodDelete, http.MethodGet, http.MethodHead, http.MethodPut}},
		{[]string{http.MethodPost}, []string{http.MethodPost}},
		{nil, nil},
	} {
		if got := withHead(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("withHead(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

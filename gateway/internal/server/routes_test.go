package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/meshplane/meshplane/gateway/internal/apidocs"
)

func TestParseTemplate(t *testing.T) {
	for _, tc := range []struct {
		template string
		segments []string
		verb     string
	}{
		{"/v1/tasks", []string{"v1", "tasks"}, ""},
		{"/v1/tasks/{task_id}", []string{"v1", "tasks", "*"}, ""},
		{"/v1/tasks/{task_id}:cancel", []string{"v1", "tasks", "*"}, "cancel"},
		{"/v1/tasks:batchSubmit", []string{"v1", "tasks"}, "batchSubmit"},
		{"/v1/{name=projects/*/items/*}:get", []string{"v1", "projects", "*", "items", "*"}, "get"},
		{"/v1/files/{path=**}", []string{"v1", "files", "**"}, ""},
	} {
		rt, err := parseTemplate(http.MethodGet, tc.template)
		if err != nil {
			t.Errorf("%s: %v", tc.template, err)
			continue
		}
		if !slices.Equal(rt.segments, tc.segments) || rt.verb != tc.verb {
			t.Errorf("%s: segments %q verb %q, want %q %q", tc.template, rt.segments, rt.verb, tc.segments, tc.verb)
		}
	}
	for _, bad := range []string{"v1/tasks", "/v1//tasks", "/v1/{task_id"} {
		if _, err := parseTemplate(http.MethodGet, bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestClientRoutesCoverEveryBinding(t *testing.T) {
	routes, err := clientRoutes()
	if err != nil {
		t.Fatal(err)
	}
	// The bindings are exactly the operations of the OpenAPI document.
	var spec struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(apidocs.EmbeddedSpec(), &spec); err != nil {
		t.Fatal(err)
	}
	key := func(rt route) string { return rt.method + " " + strings.Join(rt.segments, "/") + ":" + rt.verb }
	var fromSpec, fromProtos []string
	for path, operations := range spec.Paths {
		for method := range operations {
			rt, err := parseTemplate(strings.ToUpper(method), path)
			if err != nil {
				t.Fatal(err)
			}
			fromSpec = append(fromSpec, key(rt))
		}
	}
	for _, rt := range routes {
		fromProtos = append(fromProtos, key(rt))
	}
	slices.Sort(fromSpec)
	slices.Sort(fromProtos)
	if len(fromSpec) == 0 || !slices.Equal(fromSpec, fromProtos) {
		t.Errorf("routes from the protos %q, operations in the spec %q", fromProtos, fromSpec)
	}
}

func TestAllowedMethods(t *testing.T) {
	routes, err := clientRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/v1/tasks", []string{http.MethodGet, http.MethodPost}},
		{"/v1/tasks/t-1", []string{http.MethodGet}},
		{"/v1/tasks/t-1:cancel", []string{http.MethodPost}}, // not GetTask with the id "t-1:cancel"
		{"/v1/tasks/t-1:watch", []string{http.MethodGet}},
		{"/v1/tasks/t-1:other", []string{http.MethodGet}}, // no such verb: GetTask's id
		{"/v1/tasks:batchSubmit", []string{http.MethodPost}},
		{"/v1/namespaces/demo/states/counter", []string{http.MethodDelete, http.MethodGet, http.MethodPut}},
		{"/v1/nothing", nil},
		{"/v1/tasks/t-1/extra", nil},
	} {
		req := httptest.NewRequest(http.MethodOptions, tc.path, nil)
		if got := allowedMethods(routes, req); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.path, got, tc.want)
		}
	}
}

// A known path with a method it has no binding for is the client's mistake:
// 405 with Allow, never grpc-gateway's default 501 (a server error).
func TestWrongMethodIs405WithAllow(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodDelete, "/v1/tasks", "GET, HEAD, POST"},
		{"TRACE", "/v1/tasks/t-1", "GET, HEAD"},
		{http.MethodPatch, "/v1/namespaces/demo/states/counter", "DELETE, GET, HEAD, PUT"},
		{http.MethodGet, "/v1/tasks:batchSubmit", "POST"},
		{http.MethodOptions, "/v1/tasks/t-1:cancel", "POST"},
	} {
		resp, body := do(t, newRequest(t, tc.method, gw.URL+tc.path, strings.NewReader("")))
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: status %d, want 405: %s", tc.method, tc.path, resp.StatusCode, body)
			continue
		}
		if got := resp.Header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type = %q", tc.method, tc.path, ct)
		}
		if st := decodeStatus(t, body); codes.Code(st.Code) != codes.Unimplemented || st.Message == "" {
			t.Errorf("%s %s: body %s", tc.method, tc.path, body)
		}
	}
	// Unknown paths stay 404.
	if resp, body := do(t, newRequest(t, "TRACE", gw.URL+"/v1/nothing", strings.NewReader(""))); resp.StatusCode != http.StatusNotFound {
		t.Errorf("TRACE /v1/nothing: status %d: %s", resp.StatusCode, body)
	}
}

// A path ending in ":<verb>" of a custom method names that method (AIP-136):
// another method gets 405 with Allow, instead of GetTask looking up the task
// "t-1:cancel". Only where ids cannot contain ':': a state key may.
func TestCustomVerbWithOtherMethodIs405(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodGet, "/v1/tasks/t-1:cancel", "POST"},
		{http.MethodGet, "/v1/tasks/t-1:resubmit", "POST"},
		{http.MethodDelete, "/v1/tasks/t-1:watch", "GET, HEAD"},
		{http.MethodPost, "/v1/tasks/t-1:watch", "GET, HEAD"},
	} {
		resp, body := do(t, newRequest(t, tc.method, gw.URL+tc.path, strings.NewReader("")))
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: status %d, Allow %q; want 405, %q: %s", tc.method, tc.path,
				resp.StatusCode, resp.Header.Get("Allow"), tc.allow, body)
			continue
		}
		if st := decodeStatus(t, body); codes.Code(st.Code) != codes.Unimplemented {
			t.Errorf("%s %s: body %s", tc.method, tc.path, body)
		}
	}
	// Not a custom verb: an id, as before.
	if resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/t-1:other", nil)); resp.StatusCode != http.StatusOK ||
		!strings.Contains(string(body), `"id":"t-1:other"`) {
		t.Errorf("GET /v1/tasks/t-1:other: %d %s", resp.StatusCode, body)
	}
	// A state key may contain ':', a verb's name included.
	resp, body := do(t, newRequest(t, http.MethodPut, gw.URL+"/v1/namespaces/demo/states/a:cancel",
		strings.NewReader(`{"value": {"json": 1}}`)))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"key":"a:cancel"`) {
		t.Errorf("PUT state a:cancel: %d %s", resp.StatusCode, body)
	}
}

func TestCustomVerbMethods(t *testing.T) {
	routes, err := clientRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/v1/tasks/t-1:cancel", []string{http.MethodPost}},
		{"/v1/tasks/t-1:watch", []string{http.MethodGet}},
		{"/v1/channels/news:publish", []string{http.MethodPost}},
		{"/v1/tasks/t-1", nil},
		{"/v1/tasks/t-1:other", nil},
		{"/v1/tasks:batchSubmit", nil}, // a verb after a literal: no id to confuse
		{"/v1/namespaces/demo/states/a:cancel", nil},
	} {
		req := httptest.NewRequest(http.MethodGet, tc.path, nil)
		if got := customVerbMethods(routes, req); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.path, got, tc.want)
		}
	}
}

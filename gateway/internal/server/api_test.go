package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

func TestSubmitTaskPlainJSON(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)

	req := newRequest(t, http.MethodPost, gw.URL+"/v1/tasks",
		strings.NewReader(`{"target": {"capability": "text.echo"}, "input": {"json": {"text": "hello"}}}`))
	req.Header.Set("Content-Type", "application/json")
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var got struct {
		Task         map[string]any `json:"task"`
		Deduplicated *bool          `json:"deduplicated"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if got.Task["id"] != "t-1" || got.Task["state"] != "TASK_STATE_QUEUED" {
		t.Errorf("task = %v", got.Task)
	}
	input, _ := got.Task["input"].(map[string]any)
	if value, _ := json.Marshal(input["json"]); string(value) != `{"text":"hello"}` {
		t.Errorf("input = %v, want the plain JSON payload back", got.Task["input"])
	}
	// Scalar defaults are emitted, camelCase; unset messages are omitted, never null.
	if got.Deduplicated == nil || *got.Deduplicated {
		t.Errorf("deduplicated should be present and false: %s", body)
	}
	if _, ok := got.Task["progressMessage"]; !ok {
		t.Errorf("camelCase default field progressMessage missing: %s", body)
	}
	if _, ok := got.Task["createTime"]; ok {
		t.Errorf("unset createTime should be omitted: %s", body)
	}
}

func TestEveryClientServiceIsRouted(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodGet, "/v1/tasks/t-9", ""},
		{http.MethodGet, "/v1/agents", ""},
		{http.MethodGet, "/v1/channels/news:subscribe", ""},
		{http.MethodPut, "/v1/namespaces/demo/states/counter", `{"value": {"json": 1}}`},
	} {
		resp, body := do(t, newRequest(t, tc.method, gw.URL+tc.path, strings.NewReader(tc.body)))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s %s: status %d, body %s", tc.method, tc.path, resp.StatusCode, body)
		}
	}
}

// TestClientServicesMatchProtos fails when a service gains google.api.http
// annotations without being registered in clientServices (or vice versa).
func TestClientServicesMatchProtos(t *testing.T) {
	var annotated []string
	protoregistry.GlobalFiles.RangeFilesByPackage("meshplane.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				if proto.HasExtension(sd.Methods().Get(j).Options(), annotations.E_Http) {
					annotated = append(annotated, string(sd.FullName()))
					break
				}
			}
		}
		return true
	})
	var registered []string
	for _, s := range clientServices {
		registered = append(registered, s.name)
	}
	slices.Sort(annotated)
	slices.Sort(registered)
	if len(annotated) == 0 || !slices.Equal(annotated, registered) {
		t.Errorf("services with HTTP rules %v, registered %v", annotated, registered)
	}
}

func TestHeadersPassToMetadata(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	const method = "/meshplane.v1.TaskService/GetTask"

	req := newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/t-1", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	req.Header.Set("X-Request-Id", "req-42")
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Request-Id"); got != "req-42" {
		t.Errorf("response X-Request-Id = %q, want the client's", got)
	}
	md := up.metadata(method)
	if got := md.Get("authorization"); !slices.Equal(got, []string{"Bearer s3cret"}) {
		t.Errorf("authorization metadata = %q, want it exactly once", got)
	}
	if got := md.Get("grpcgateway-authorization"); len(got) != 0 {
		t.Errorf("credential also forwarded as grpcgateway-authorization: %q", got)
	}
	if got := md.Get("x-request-id"); !slices.Equal(got, []string{"req-42"}) {
		t.Errorf("x-request-id metadata = %q", got)
	}

	// Absent (or unusable) ids are replaced by a generated one, echoed and forwarded.
	for _, clientID := range []string{"", strings.Repeat("x", maxRequestIDLen+1), "has space"} {
		req := newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/t-1", nil)
		if clientID != "" {
			req.Header.Set("X-Request-Id", clientID)
		}
		resp, _ := do(t, req)
		id := resp.Header.Get("X-Request-Id")
		if id == "" || id == clientID {
			t.Errorf("client id %q: response X-Request-Id = %q, want a generated one", clientID, id)
		}
		if got := up.metadata(method).Get("x-request-id"); !slices.Equal(got, []string{id}) {
			t.Errorf("client id %q: x-request-id metadata = %q, want [%s]", clientID, got, id)
		}
	}
}

// gRPC's transport metadata (content-type, grpc-*) is not forwarded as
// Grpc-Metadata- headers; the application's metadata is.
func TestTransportMetadataIsNotForwarded(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/t-1", nil))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	for name := range resp.Header {
		lower := strings.ToLower(name)
		if lower == "grpc-metadata-content-type" || strings.HasPrefix(lower, "grpc-metadata-grpc-") {
			t.Errorf("transport metadata forwarded: %s: %q", name, resp.Header.Values(name))
		}
	}
	if got := resp.Header.Get("Grpc-Metadata-X-Served-By"); got != "fake" {
		t.Errorf("Grpc-Metadata-X-Served-By = %q, want the application's metadata", got)
	}

	for _, key := range []string{"content-type", "Content-Type", "grpc-accept-encoding", "grpc-encoding", "grpc-status-details-bin", "te", ":status"} {
		if h, ok := outgoingMetadata(runtime.MetadataHeaderPrefix)(key); ok {
			t.Errorf("%s forwarded as %s", key, h)
		}
	}
	if h, ok := outgoingMetadata(runtime.MetadataTrailerPrefix)("x-app"); !ok || h != "Grpc-Trailer-x-app" {
		t.Errorf("x-app trailer: %q, %v", h, ok)
	}
}

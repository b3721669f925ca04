package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// fieldViolations returns the google.rpc.BadRequest violations of an error
// body as field → description.
func fieldViolations(t *testing.T, st statusBody) map[string]string {
	t.Helper()
	violations := map[string]string{}
	for _, detail := range st.Details {
		if detail["@type"] != "type.googleapis.com/google.rpc.BadRequest" {
			continue
		}
		list, _ := detail["fieldViolations"].([]any)
		for _, v := range list {
			fv, _ := v.(map[string]any)
			field, _ := fv["field"].(string)
			description, _ := fv["description"].(string)
			violations[field] = description
		}
	}
	return violations
}

// An enum name its enum does not have is refused with 400 naming the field,
// not dropped (which left the field at its default, ..._UNSPECIFIED), even
// next to an unknown field; unknown fields alone are still ignored.
func TestUnknownEnumNameInBodyIs400(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	for _, tc := range []struct {
		name, path, body, field, value string
	}{
		{"unknown name", "/v1/tasks", `{"target": {"capability": "c", "strategy": "BOGUS"}}`, "target.strategy", "BOGUS"},
		{"lowercase name", "/v1/tasks", `{"target": {"capability": "c", "strategy": "scheduling_strategy_round_robin"}}`,
			"target.strategy", "scheduling_strategy_round_robin"},
		{"after an unknown field", "/v1/tasks", `{"future": {"a": [1]}, "target": {"capability": "c", "strategy": "BOGUS"}}`,
			"target.strategy", "BOGUS"},
		{"before an unknown field", "/v1/tasks", `{"target": {"capability": "c", "strategy": "BOGUS", "future": 1}}`,
			"target.strategy", "BOGUS"},
		{"proto field names", "/v1/tasks", `{"target": {"capability": "c", "strategy": "BOGUS"}, "retry_policy": {}}`,
			"target.strategy", "BOGUS"},
		{"in a list", "/v1/tasks:batchSubmit",
			`{"requests": [{"target": {"capability": "c"}}, {"target": {"capability": "c", "strategy": "NOPE"}}]}`,
			"requests[1].target.strategy", "NOPE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, newRequest(t, http.MethodPost, gw.URL+tc.path, strings.NewReader(tc.body)))
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			st := decodeStatus(t, body)
			want := tc.field + `: unknown value "` + tc.value + `"`
			if codes.Code(st.Code) != codes.InvalidArgument || st.Message != want {
				t.Errorf("body %s, want code 3 and message %q", body, want)
			}
			if got := fieldViolations(t, st)[tc.field]; got != `unknown value "`+tc.value+`"` {
				t.Errorf("BadRequest violation of %s = %q: %s", tc.field, got, body)
			}
		})
	}

	// Unknown fields stay ignored, and known names still work.
	resp, body := do(t, newRequest(t, http.MethodPost, gw.URL+"/v1/tasks", strings.NewReader(
		`{"future": {"x": "BOGUS"}, "target": {"capability": "c", "strategy": "SCHEDULING_STRATEGY_ROUND_ROBIN", "later": 1}}`)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("unknown fields: status %d: %s", resp.StatusCode, body)
	}
	var got struct {
		Task struct {
			Target map[string]any `json:"target"`
		} `json:"task"`
	}
	if err := json.Unmarshal(body, &got); err != nil || got.Task.Target["strategy"] != "SCHEDULING_STRATEGY_ROUND_ROBIN" {
		t.Errorf("strategy did not reach the upstream: %s", body)
	}
}

// The gateway's own 400s about a query parameter or the body name the field
// as the client sent it, in a google.rpc.BadRequest, with a message free of Go
// package noise.
func TestGatewayBadRequestsNameTheField(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	for _, tc := range []struct {
		name, method, path, body string
		field, message           string // field "": no BadRequest
	}{
		{"query, JSON name", http.MethodGet, "/v1/tasks?pageSize=abc", "",
			"pageSize", `pageSize: invalid value "abc" (want int32)`},
		{"query, proto name", http.MethodGet, "/v1/tasks?page_size=abc", "",
			"page_size", `page_size: invalid value "abc" (want int32)`},
		{"query, enum", http.MethodGet, "/v1/tasks?state=BOGUS", "",
			"state", `state: unknown value "BOGUS"`},
		{"query, too many values", http.MethodGet, "/v1/tasks?pageSize=1&pageSize=2", "",
			"pageSize", `pageSize: too many values (1, 2)`},
		{"body, number", http.MethodPost, "/v1/tasks", `{"target": {"capability": "c"}, "priority": 1.5}`,
			"priority", `priority: invalid value 1.5 (want int32)`},
		{"body, nested", http.MethodPost, "/v1/tasks", `{"target": {"capability": 7}}`,
			"target.capability", `target.capability: invalid value 7 (want string)`},
		{"body, proto name", http.MethodPost, "/v1/tasks", `{"target": {"capability": "c"}, "idempotency_key": []}`,
			"idempotency_key", `idempotency_key: invalid value [ (want string)`},
		{"body, malformed", http.MethodPost, "/v1/tasks", `{"target":`,
			"", `invalid JSON body: unexpected EOF`},
		{"body, not an object", http.MethodPost, "/v1/tasks", `[1]`,
			"", `invalid JSON body: unexpected token [`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, newRequest(t, tc.method, gw.URL+tc.path, strings.NewReader(tc.body)))
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			st := decodeStatus(t, body)
			if codes.Code(st.Code) != codes.InvalidArgument || st.Message != tc.message {
				t.Errorf("body %s, want code 3 and message %q", body, tc.message)
			}
			violations := fieldViolations(t, st)
			if tc.field == "" {
				if len(violations) != 0 {
					t.Errorf("violations %v, want none", violations)
				}
			} else if _, ok := violations[tc.field]; !ok || len(violations) != 1 {
				t.Errorf("violations %v, want one for %s", violations, tc.field)
			}
		})
	}
}

func TestJSONPathAt(t *testing.T) {
	doc := []byte(`{"a": 1, "b": {"c": [10, {"d": "x:y"}], "e": null}, "f": "\"}"}`)
	for _, tc := range []struct {
		at, want string
	}{
		{`{"a"`, ""},
		{`"a"`, "a"},
		{`1`, "a"},
		{`"c"`, "b.c"},
		{`10`, "b.c[0]"},
		{`{"d"`, "b.c[1]"},
		{`"x:y"`, "b.c[1].d"},
		{`null`, "b.e"},
		{`"\"}"`, "f"},
	} {
		off := strings.Index(string(doc), tc.at)
		if got := jsonPathAt(doc, off); got != tc.want {
			t.Errorf("at %q (offset %d): %q, want %q", tc.at, off, got, tc.want)
		}
	}
	if got := offsetOf([]byte("{\n  \"é\": 1.5}"), 2, 8); got != 10 {
		t.Errorf("offsetOf = %d, want 10", got)
	}
}

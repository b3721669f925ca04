package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// submitOverREST posts body to path with headers and returns the response and
// the correlation ids of the tasks it answers with.
func submitOverREST(t *testing.T, url, body string, headers map[string]string) (*http.Response, []string) {
	t.Helper()
	req := newRequest(t, http.MethodPost, url, strings.NewReader(body))
	for name, value := range headers {
		req.Header.Set(name, value)
	}
	resp, raw := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: status %d: %s", url, resp.StatusCode, raw)
	}
	type task struct {
		CorrelationID string `json:"correlationId"`
	}
	var answer struct {
		Task  *task  `json:"task"`
		Tasks []task `json:"tasks"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	if answer.Task != nil {
		answer.Tasks = append(answer.Tasks, *answer.Task)
	}
	ids := make([]string, len(answer.Tasks))
	for i, task := range answer.Tasks {
		ids[i] = task.CorrelationID
	}
	return resp, ids
}

// A REST submit whose body names no correlation id takes the call's: the
// X-Request-Id (sent or generated), or a Grpc-Metadata-X-Correlation-Id, which
// the plane prefers for the call too.
func TestRESTSubmitTakesTheCallsCorrelationID(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	const plain = `{"target": {"capability": "text.echo"}}`
	long := strings.Repeat("c", maxCorrelationIDLen+50)
	for _, tc := range []struct {
		name, body string
		headers    map[string]string
		want       string
	}{
		{"request id", plain, map[string]string{"X-Request-Id": "req-7"}, "req-7"},
		{"the body's own", `{"target": {"capability": "text.echo"}, "correlationId": "mine"}`, map[string]string{"X-Request-Id": "req-7"}, "mine"},
		{"correlation metadata", plain, map[string]string{"X-Request-Id": "req-7", "Grpc-Metadata-X-Correlation-Id": "corr-1"}, "corr-1"},
		{"cut as the plane cuts it", plain, map[string]string{"Grpc-Metadata-X-Correlation-Id": long}, long[:maxCorrelationIDLen]},
	} {
		_, ids := submitOverREST(t, gw.URL+"/v1/tasks", tc.body, tc.headers)
		if len(ids) != 1 || ids[0] != tc.want {
			t.Errorf("%s: correlation ids %q, want [%s]", tc.name, ids, tc.want)
		}
	}

	resp, ids := submitOverREST(t, gw.URL+"/v1/tasks", plain, nil)
	if generated := resp.Header.Get("X-Request-Id"); generated == "" || len(ids) != 1 || ids[0] != generated {
		t.Errorf("without X-Request-Id: correlation ids %q, want the generated request id %q", ids, generated)
	}

	batch := `{"requests": [{"target": {"capability": "a"}}, {"target": {"capability": "b"}, "correlationId": "mine"}]}`
	if _, ids := submitOverREST(t, gw.URL+"/v1/tasks:batchSubmit", batch, map[string]string{"X-Request-Id": "batch-1"}); strings.Join(ids, ",") != "batch-1,mine" {
		t.Errorf("batch: correlation ids %q, want [batch-1 mine]", ids)
	}
}

// Coalesced REST submits leave in one BatchSubmitTasks call, which carries no
// request id: each submit still gets its own as its correlation id.
func TestCoalescedRESTSubmitsKeepTheirOwnCorrelationIDs(t *testing.T) {
	plane := &batchingPlane{release: make(chan struct{})}
	gw, ts := startGatewayServer(t, serveBatchingPlane(t, plane))
	post := func(capability string) []string {
		body := `{"target": {"capability": "` + capability + `"}}`
		_, ids := submitOverREST(t, ts.URL+"/v1/tasks", body, map[string]string{"X-Request-Id": "id-" + capability})
		return ids
	}

	first := make(chan []string, 1)
	go func() { first <- post("first") }()
	waitFor(t, "the first submit to reach the plane", func() bool { s, _ := plane.seen(); return len(s) == 1 })
	ids := make([][]string, 3)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { ids[i] = post(fmt.Sprintf("r%d", i)) })
	}
	waitFor(t, "the submits to queue", func() bool { return gw.submits.queueDepth() == len(ids) })
	close(plane.release)
	wg.Wait()

	if got := <-first; len(got) != 1 || got[0] != "id-first" {
		t.Errorf("the lone submit: correlation ids %q", got)
	}
	for i, got := range ids {
		if want := fmt.Sprintf("id-r%d", i); len(got) != 1 || got[0] != want {
			t.Errorf("batched submit %d: correlation ids %q, want [%s]", i, got, want)
		}
	}
	if _, batches := plane.seen(); len(batches) != 1 {
		t.Errorf("batches %v; want the queued submits in one", batches)
	}
}

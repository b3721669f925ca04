package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// streamLine is one newline-delimited JSON object of a streamed response.
type streamLine struct {
	Result map[string]any `json:"result"`
	Error  *statusBody    `json:"error"`
}

func readLine(t *testing.T, r *bufio.Reader) streamLine {
	t.Helper()
	line, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading a stream line: %v (got %q)", err, line)
	}
	var l streamLine
	if err := json.Unmarshal(line, &l); err != nil {
		t.Fatalf("stream line is not JSON: %v: %q", err, line)
	}
	return l
}

// streamTimeout fails a stream test that would otherwise wait forever, e.g.
// for a message the gateway buffered instead of flushing.
const streamTimeout = 20 * time.Second

func openStream(t *testing.T, url string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), streamTimeout)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

func event(seq int64, state meshplanev1.TaskState) watchStep {
	return watchStep{event: &meshplanev1.TaskEvent{TaskId: "scripted", Sequence: seq, State: state}}
}

// TestWatchTaskFlushesEachMessage reads every event before the upstream sends
// the next one: a response buffered by the gateway would block the test (until
// the test's deadline), not pass it.
func TestWatchTaskFlushesEachMessage(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)

	up.watch <- event(1, meshplanev1.TaskState_TASK_STATE_QUEUED)
	resp, r := openStream(t, gw.URL+"/v1/tasks/scripted:watch")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Error("stream lacks X-Request-Id")
	}
	for seq, state := range []meshplanev1.TaskState{
		meshplanev1.TaskState_TASK_STATE_QUEUED,
		meshplanev1.TaskState_TASK_STATE_RUNNING,
		meshplanev1.TaskState_TASK_STATE_SUCCEEDED,
	} {
		if seq > 0 {
			up.watch <- event(int64(seq+1), state)
		}
		l := readLine(t, r)
		ev, _ := l.Result["event"].(map[string]any)
		if l.Error != nil || ev["sequence"] != strconv.Itoa(seq+1) || ev["state"] != state.String() {
			t.Fatalf("line %d: %+v", seq+1, l)
		}
	}
	close(up.watch)
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("after the last event: %q, %v; want a clean end", rest, err)
	}
}

func TestWatchTaskErrorMidStream(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)

	up.watch <- event(1, meshplanev1.TaskState_TASK_STATE_RUNNING)
	resp, r := openStream(t, gw.URL+"/v1/tasks/scripted:watch")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if l := readLine(t, r); l.Result == nil {
		t.Fatalf("first line %+v", l)
	}
	up.watch <- watchStep{err: status.Error(codes.Unavailable, "control plane draining")}
	l := readLine(t, r)
	if l.Result != nil || l.Error == nil || codes.Code(l.Error.Code) != codes.Unavailable ||
		l.Error.Message != "control plane draining" {
		t.Errorf("error line %+v", l)
	}
	if rest, _ := io.ReadAll(r); len(rest) != 0 {
		t.Errorf("data after the error line: %q", rest)
	}
}

func TestWatchTaskErrorBeforeFirstMessage(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)

	resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/missing:watch", nil))
	// grpc-gateway's format: the mapped status, and the error as the one line.
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("status %d, want 404: %s", resp.StatusCode, body)
	}
	var l streamLine
	if err := json.Unmarshal(body, &l); err != nil || l.Error == nil || codes.Code(l.Error.Code) != codes.NotFound {
		t.Errorf("body %s, want {\"error\": <NOT_FOUND status>}", body)
	}
}

func TestSubscribeStreamsOneofEvents(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)

	_, r := openStream(t, gw.URL+"/v1/channels/news:subscribe")
	if l := readLine(t, r); l.Result["started"] == nil {
		t.Errorf("first line %+v, want started", l)
	}
	l := readLine(t, r)
	msg, _ := l.Result["message"].(map[string]any)
	payload, _ := msg["payload"].(map[string]any)
	if msg["messageId"] != "m-1" || payload["json"] != "hello" {
		t.Errorf("second line %+v", l)
	}
}

// A stream that ends before any message (a watch resumed after the terminal
// event) is still a typed, empty application/json response.
func TestWatchTaskEmptyStreamIsJSON(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	close(up.watch)
	resp, r := openStream(t, gw.URL+"/v1/tasks/scripted:watch?afterSequence=9")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("body %q, %v; want empty", rest, err)
	}
}

// readErrorLine checks that body is the one {"error": <status>} line of a
// stream that failed before its first message, and returns that status.
func readErrorLine(t *testing.T, body []byte) *statusBody {
	t.Helper()
	if len(body) == 0 || body[len(body)-1] != '\n' || bytes.Count(body, []byte("\n")) != 1 {
		t.Fatalf("body %q, want one line", body)
	}
	var l streamLine
	if err := json.Unmarshal(body, &l); err != nil || l.Error == nil || l.Result != nil {
		t.Fatalf("body %s, want {\"error\": <status>}", body)
	}
	return l.Error
}

// Errors the gateway makes itself on a streaming route have the stream's
// format, as the plane's errors there do: the mapped status and one
// {"error": …} line, not a bare status object.
func TestStreamRouteGatewayErrorsAreErrorLines(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)

	// A query parameter the gateway cannot parse: 400.
	resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/scripted:watch?afterSequence=abc", nil))
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("afterSequence=abc: status %d, want 400: %s", resp.StatusCode, body)
	}
	if st := readErrorLine(t, body); codes.Code(st.Code) != codes.InvalidArgument ||
		st.Message != `afterSequence: invalid value "abc" (want int64)` {
		t.Errorf("afterSequence=abc: %+v", st)
	}

	// A deadline over before the call: 504.
	req := newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/scripted:watch", nil)
	req.Header.Set("Grpc-Timeout", "1n")
	resp, body = do(t, req)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("Grpc-Timeout 1n: status %d, want 504: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if st := readErrorLine(t, body); codes.Code(st.Code) != codes.DeadlineExceeded {
		t.Errorf("Grpc-Timeout 1n: %+v", st)
	}

	// A unary route keeps the bare status.
	req = newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/t-1", nil)
	req.Header.Set("Grpc-Timeout", "1n")
	resp, body = do(t, req)
	if st := decodeStatus(t, body); resp.StatusCode != http.StatusGatewayTimeout || codes.Code(st.Code) != codes.DeadlineExceeded {
		t.Errorf("GetTask with Grpc-Timeout 1n: %d %s", resp.StatusCode, body)
	}

	// The upstream unreachable: 503.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	gwDown := startGateway(t, down)
	resp, body = do(t, newRequest(t, http.MethodGet, gwDown.URL+"/v1/channels/news:subscribe", nil))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("upstream down: status %d, want 503: %s", resp.StatusCode, body)
	}
	if st := readErrorLine(t, body); codes.Code(st.Code) != codes.Unavailable {
		t.Errorf("upstream down: %+v", st)
	}
}

package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// startRun runs the gateway as main does and returns its base URL (read from
// the line it prints), a stop function and the channel Run's result arrives on.
func startRun(t *testing.T, upstream string, args ...string) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	cfg := testConfig(t, upstream, append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), pw)
		pw.Close()
	}()
	out := bufio.NewReader(pr)
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the start-up line: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()

	re := regexp.MustCompile(`^meshplane gateway listening on (http://127\.0\.0\.1:([0-9]+)) \(upstream ` +
		regexp.QuoteMeta(upstream) + `\)\n$`)
	m := re.FindStringSubmatch(line)
	if m == nil || m[2] == "0" {
		t.Fatalf("start-up line %q", line)
	}
	return m[1], cancel, done
}

func TestRunServesOnBoundPortAndStops(t *testing.T) {
	up := startUpstream(t)
	url, stop, done := startRun(t, up.addr)

	resp, body := do(t, newRequest(t, http.MethodGet, url+"/healthz", nil))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}
}

// TestRunShutdownEndsOpenStreams: a watch that never ends is cut once the
// shutdown timeout has passed, and Run still returns cleanly.
func TestRunShutdownEndsOpenStreams(t *testing.T) {
	up := startUpstream(t)
	url, stop, done := startRun(t, up.addr, "--shutdown-timeout", "100ms")

	up.watch <- event(1, meshplanev1.TaskState_TASK_STATE_RUNNING)
	_, r := openStream(t, url+"/v1/tasks/scripted:watch")
	readLine(t, r)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The connection was closed mid-response: the client sees a cut stream,
	// not a hang.
	if _, err := io.ReadAll(r); err == nil {
		t.Error("stream ended cleanly; want it cut by the shutdown")
	}
}

func TestRunFailsOnBusyAddress(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr) // holds a port
	cfg := testConfig(t, up.addr, "--listen", gw.Listener.Addr().String())
	if err := Run(t.Context(), cfg, slog.New(slog.DiscardHandler), io.Discard); err == nil {
		t.Fatal("Run on a busy address succeeded")
	}
}

// The start-up log line names the addresses bound, not the configured ones
// (port 0).
func TestRunLogsBoundAddresses(t *testing.T) {
	up := startUpstream(t)
	cfg := testConfig(t, up.addr, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var logs bytes.Buffer // written by Run only, read once it has returned
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, nil)), pw)
		pw.Close()
	}()
	out := bufio.NewReader(pr)
	printed := map[string]string{}
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`^meshplane gateway listening on (\S+) `),
		regexp.MustCompile(`^meshplane gateway serving gRPC on (\S+) `),
		regexp.MustCompile(`^meshplane gateway serving metrics on http://(\S+)/metrics`),
	} {
		line, err := out.ReadString('\n')
		m := re.FindStringSubmatch(line)
		if err != nil || m == nil {
			t.Fatalf("start-up line %q (%v), want %s", line, err, re)
		}
		printed[re.String()] = m[1]
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	var listening struct{ URL, GRPC, Metrics string }
	for line := range strings.Lines(logs.String()) {
		var entry struct {
			Msg     string `json:"msg"`
			URL     string `json:"url"`
			GRPC    string `json:"grpc"`
			Metrics string `json:"metrics"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "gateway listening" {
			listening.URL, listening.GRPC, listening.Metrics = entry.URL, entry.GRPC, entry.Metrics
		}
	}
	want := []string{}
	for _, v := range printed {
		want = append(want, v)
	}
	got := []string{listening.URL, listening.GRPC, listening.Metrics}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("logged url, grpc, metrics %q; printed %q", got, want)
	}
	for _, addr := range got {
		if strings.HasSuffix(addr, ":0") {
			t.Errorf("logged the configured address %q, not the bound one", addr)
		}
	}
}

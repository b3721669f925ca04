package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"regexp"
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

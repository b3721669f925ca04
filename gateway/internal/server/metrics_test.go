package server

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// runningGateway is the gateway run as main runs it, with its three listeners.
type runningGateway struct {
	url, grpcAddr, metricsURL string
}

// startRunWithMetrics runs the gateway with the gRPC ingress and the metrics
// listener, and reads their addresses from the start-up lines.
func startRunWithMetrics(t *testing.T, upstream string) runningGateway {
	t.Helper()
	lines := runForLines(t, upstream, 3, "--grpc-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	return runningGateway{
		url:        match(t, `^meshplane gateway listening on (http://\S+) `, lines[0]),
		grpcAddr:   match(t, `^meshplane gateway serving gRPC on (\S+) `, lines[1]),
		metricsURL: match(t, `^meshplane gateway serving metrics on (http://\S+/metrics)\n$`, lines[2]),
	}
}

// scrape reads the metrics endpoint.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, body := do(t, newRequest(t, http.MethodGet, url, nil))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %s", resp.StatusCode, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return families
}

// series finds the series of family name with exactly these labels (nil if
// there is none).
func series(families map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	family := families[name]
	if family == nil {
		return nil
	}
	for _, metric := range family.GetMetric() {
		got := map[string]string{}
		for _, pair := range metric.GetLabel() {
			got[pair.GetName()] = pair.GetValue()
		}
		matches := len(got) == len(labels)/2
		for i := 0; matches && i+1 < len(labels); i += 2 {
			matches = got[labels[i]] == labels[i+1]
		}
		if matches {
			return metric
		}
	}
	return nil
}

// value is a counter's or gauge's value (-1 when the series is missing).
func value(families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	metric := series(families, name, labels...)
	switch {
	case metric == nil:
		return -1
	case metric.GetCounter() != nil:
		return metric.GetCounter().GetValue()
	default:
		return metric.GetGauge().GetValue()
	}
}

func TestMetricsEndpointCountsCallsAndSubmitBatches(t *testing.T) {
	plane := &batchingPlane{release: make(chan struct{})}
	gw := startRunWithMetrics(t, serveBatchingPlane(t, plane))
	conn, err := grpc.NewClient(gw.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	tasks := meshplanev1.NewTaskServiceClient(conn)

	// A REST submit the plane holds, three gRPC submits queued behind it.
	first := make(chan int, 1)
	go func() {
		resp, _ := do(t, newRequest(t, http.MethodPost, gw.url+"/v1/tasks", strings.NewReader(`{"target": {"capability": "first"}}`)))
		first <- resp.StatusCode
	}()
	waitFor(t, "the first submit to reach the plane", func() bool { s, _ := plane.seen(); return len(s) == 1 })
	var wg sync.WaitGroup
	for _, capability := range []string{"a", "b", "c"} {
		wg.Go(func() {
			if _, err := tasks.SubmitTask(t.Context(), &meshplanev1.SubmitTaskRequest{
				Target: &meshplanev1.TaskTarget{Capability: capability},
			}); err != nil {
				t.Errorf("submit %s: %v", capability, err)
			}
		})
	}
	waitFor(t, "the queue depth and the batch out to show", func() bool {
		m := scrape(t, gw.metricsURL)
		return value(m, "meshplane_gateway_submit_queue_depth") == 3 &&
			value(m, "meshplane_gateway_submit_batches_in_flight") == 1 &&
			value(m, "meshplane_gateway_grpc_calls_in_flight", "grpc_method", submitMethod) == 3
	})
	close(plane.release)
	wg.Wait()
	if code := <-first; code != http.StatusOK {
		t.Fatalf("REST submit: %d", code)
	}

	// A method the plane lacks, and one no service defines.
	if _, err := tasks.GetTask(t.Context(), &meshplanev1.GetTaskRequest{TaskId: "t-1"}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("GetTask: %v, want UNIMPLEMENTED from the plane", err)
	}
	err = conn.Invoke(t.Context(), "/nowhere.v1.Nothing/Do", &meshplanev1.GetTaskRequest{}, &meshplanev1.GetTaskResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method: %v, want UNIMPLEMENTED", err)
	}
	if resp, _ := do(t, newRequest(t, http.MethodGet, gw.url+"/healthz", nil)); resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}

	m := scrape(t, gw.metricsURL)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"meshplane_gateway_http_requests_total", []string{"method", "POST", "code", "200"}, 1},
		{"meshplane_gateway_http_requests_total", []string{"method", "GET", "code", "200"}, 1},
		{"meshplane_gateway_grpc_calls_total", []string{"grpc_method", submitMethod, "grpc_code", "OK"}, 3},
		{"meshplane_gateway_grpc_calls_total", []string{"grpc_method", "/meshplane.v1.TaskService/GetTask", "grpc_code", "Unimplemented"}, 1},
		{"meshplane_gateway_grpc_calls_total", []string{"grpc_method", otherMethod, "grpc_code", "Unimplemented"}, 1},
		{"meshplane_gateway_grpc_calls_in_flight", []string{"grpc_method", submitMethod}, 0},
		{"meshplane_gateway_submit_batches_total", []string{"outcome", batchAnswered}, 1},
		{"meshplane_gateway_submits_sent_alone_total", nil, 1},
		{"meshplane_gateway_submit_queue_depth", nil, 0},
		{"meshplane_gateway_submit_batches_in_flight", nil, 0},
	} {
		if got := value(m, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if h := series(m, "meshplane_gateway_submit_batch_size").GetHistogram(); h.GetSampleCount() != 2 || h.GetSampleSum() != 4 {
		t.Errorf("batch sizes: %d batches of %v submits, want the first alone and one of three", h.GetSampleCount(), h.GetSampleSum())
	}
	if h := series(m, "meshplane_gateway_submit_queue_seconds").GetHistogram(); h.GetSampleCount() != 4 {
		t.Errorf("queue waits observed for %d submits, want 4", h.GetSampleCount())
	}
	if h := series(m, "meshplane_gateway_grpc_call_duration_seconds", "grpc_method", submitMethod).GetHistogram(); h.GetSampleCount() != 3 {
		t.Errorf("call durations for %d submits, want 3", h.GetSampleCount())
	}
	if m["go_goroutines"] == nil || m["process_resident_memory_bytes"] == nil {
		t.Error("the Go runtime's and the process's metrics are missing")
	}
}

func TestBatchOutcomesAreCounted(t *testing.T) {
	for _, c := range []struct {
		outcome  string
		failAll  error
		subjects []string
		alone    float64
	}{
		{batchResent, nil, []string{"a", "", "b"}, 4},                                            // the first, then each again
		{batchFailed, status.Error(codes.Unavailable, "plane went away"), []string{"a", "b"}, 1}, // only the first
	} {
		t.Run(c.outcome, func(t *testing.T) {
			plane := &batchingPlane{release: make(chan struct{}), failAll: c.failAll}
			coalescer, client := startCoalescer(t, plane)
			submitBehindHeld(t, coalescer, client, plane, c.subjects, background, nil)
			families, err := coalescer.metrics.registry.Gather()
			if err != nil {
				t.Fatal(err)
			}
			m := map[string]*dto.MetricFamily{}
			for _, family := range families {
				m[family.GetName()] = family
			}
			for _, outcome := range []string{batchAnswered, batchResent, batchFailed} {
				want := 0.0
				if outcome == c.outcome {
					want = 1
				}
				// A label value never counted has no series: zero.
				if got := max(value(m, "meshplane_gateway_submit_batches_total", "outcome", outcome), 0); got != want {
					t.Errorf("%s batches: %v, want %v", outcome, got, want)
				}
			}
			if got := value(m, "meshplane_gateway_submits_sent_alone_total"); got != c.alone {
				t.Errorf("sent alone: %v, want %v", got, c.alone)
			}
		})
	}
}

func TestIngressMethodLabelsAreBounded(t *testing.T) {
	for _, c := range []struct {
		method string
		label  string
		unary  bool
	}{
		{"/meshplane.v1.TaskService/SubmitTask", "/meshplane.v1.TaskService/SubmitTask", true},
		{"/meshplane.v1.TaskService/WatchTask", "/meshplane.v1.TaskService/WatchTask", false},
		{"/meshplane.v1.AgentLinkService/Connect", "/meshplane.v1.AgentLinkService/Connect", false},
		{"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Check", true},
		{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", false},
		{"/meshplane.v1.TaskService/NoSuchMethod", otherMethod, false},
		{"/meshplane.v1.Task/SubmitTask", otherMethod, false}, // a message, not a service
		{"/made.up.v9.Service/Call", otherMethod, false},
		{"no-slashes", otherMethod, false},
	} {
		label, unary := knownMethod(c.method)
		if label != c.label || unary != c.unary {
			t.Errorf("knownMethod(%q) = %q, %v; want %q, %v", c.method, label, unary, c.label, c.unary)
		}
	}
}

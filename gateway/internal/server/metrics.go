package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// The reflection services' descriptors, so that calls to them through the
	// ingress are counted under their names.
	_ "google.golang.org/grpc/reflection/grpc_reflection_v1"
	_ "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
)

// otherMethod labels calls to methods the gateway does not know: the ingress
// forwards any method name, and a label per name would let callers grow the
// series without bound.
const otherMethod = "other"

// metrics are the gateway's Prometheus series, on a registry of their own.
type metrics struct {
	registry *prometheus.Registry

	httpRequests *prometheus.CounterVec   // method, code
	httpDuration *prometheus.HistogramVec // method

	grpcCalls    *prometheus.CounterVec   // grpc_method, grpc_code
	grpcDuration *prometheus.HistogramVec // grpc_method (unary methods only)
	grpcInFlight *prometheus.GaugeVec     // grpc_method

	submitBatches     *prometheus.CounterVec // outcome
	submitBatchSize   prometheus.Histogram
	submitsSentAlone  prometheus.Counter
	submitQueueWaited prometheus.Histogram
}

// Outcomes of a submit batch (meshplane_gateway_submit_batches_total).
const (
	batchAnswered = "answered" // the upstream took the batch: every submit has its task
	batchResent   = "resent"   // refused for its content: each submit went again on its own
	batchFailed   = "failed"   // failed otherwise: every submit in it got the error
)

// newMetrics registers the gateway's series, the Go runtime's and the
// process's.
func newMetrics() *metrics {
	m := &metrics{registry: prometheus.NewRegistry()}
	durations := prometheus.ExponentialBuckets(0.0005, 2, 15) // 0.5 ms to ~8 s
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshplane_gateway_http_requests_total",
		Help: "HTTP requests answered, by method and status code.",
	}, []string{"method", "code"})
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "meshplane_gateway_http_request_duration_seconds",
		Help:    "Time to answer an HTTP request (streams: until they end), by method.",
		Buckets: durations,
	}, []string{"method"})
	m.grpcCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshplane_gateway_grpc_calls_total",
		Help: `Calls the gRPC ingress finished, by full method ("other" for unknown ones) and status code.`,
	}, []string{"grpc_method", "grpc_code"})
	m.grpcDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "meshplane_gateway_grpc_call_duration_seconds",
		Help:    "Time the gRPC ingress took to answer a unary call, by full method.",
		Buckets: durations,
	}, []string{"grpc_method"})
	m.grpcInFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshplane_gateway_grpc_calls_in_flight",
		Help: "Calls (streams included) the gRPC ingress is forwarding now, by full method.",
	}, []string{"grpc_method"})
	m.submitBatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshplane_gateway_submit_batches_total",
		Help: "SubmitTask batches sent upstream as BatchSubmitTasks, by outcome: answered, resent (refused for " +
			"its content, each submit sent again alone) or failed.",
	}, []string{"outcome"})
	m.submitBatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meshplane_gateway_submit_batch_size",
		Help:    "Submits per batch sent upstream (a lone submit, sent as a plain SubmitTask, counts as 1).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 to 1024
	})
	m.submitsSentAlone = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshplane_gateway_submits_sent_alone_total",
		Help: "Submits sent upstream as their own SubmitTask call (alone in the queue, or resent from a refused batch).",
	})
	m.submitQueueWaited = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meshplane_gateway_submit_queue_seconds",
		Help:    "Time a submit waited in the gateway's queue before its batch left.",
		Buckets: durations,
	})
	m.registry.MustRegister(
		m.httpRequests, m.httpDuration, m.grpcCalls, m.grpcDuration, m.grpcInFlight,
		m.submitBatches, m.submitBatchSize, m.submitsSentAlone, m.submitQueueWaited,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// watchSubmitQueue reports the submit coalescer's state when scraped: the
// submits waiting for a batch, and the batches out.
func (m *metrics) watchSubmitQueue(depth, batchesOut func() int) {
	m.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshplane_gateway_submit_queue_depth",
			Help: "Submits waiting in the gateway for the next batch.",
		}, func() float64 { return float64(depth()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshplane_gateway_submit_batches_in_flight",
			Help: "Submit batches (lone submits included) out to the upstream now.",
		}, func() float64 { return float64(batchesOut()) }),
	)
}

// batchLeft records a batch leaving the queue: its size, and how long each of
// its submits waited.
func (m *metrics) batchLeft(batch []*queuedSubmit) {
	m.submitBatchSize.Observe(float64(len(batch)))
	now := time.Now()
	for _, s := range batch {
		m.submitQueueWaited.Observe(now.Sub(s.queued).Seconds())
	}
}

// handler serves the registry in the Prometheus exposition formats.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// instrumentHTTP counts every request with its method and status code.
func (m *metrics) instrumentHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		method := httpMethodLabel(r.Method)
		m.httpRequests.WithLabelValues(method, strconv.Itoa(rec.statusCode())).Inc()
		m.httpDuration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	})
}

// httpMethodLabel keeps the method label to the standard methods.
func httpMethodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return method
	}
	return otherMethod
}

// streamInterceptor counts the ingress's calls. It sees every call: the
// ingress forwards them all as streams.
func (m *metrics) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	method, unary := knownMethod(info.FullMethod)
	inFlight := m.grpcInFlight.WithLabelValues(method)
	inFlight.Inc()
	start := time.Now()
	err := handler(srv, ss)
	inFlight.Dec()
	m.grpcCalls.WithLabelValues(method, status.Code(err).String()).Inc()
	if unary {
		m.grpcDuration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	}
	return err
}

// knownMethod returns fullMethod ("/package.Service/Method") if a service
// compiled into the gateway defines it, else otherMethod; and whether it is
// unary.
func knownMethod(fullMethod string) (string, bool) {
	service, name, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return otherMethod, false
	}
	descriptor, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return otherMethod, false
	}
	serviceDescriptor, ok := descriptor.(protoreflect.ServiceDescriptor)
	if !ok {
		return otherMethod, false
	}
	method := serviceDescriptor.Methods().ByName(protoreflect.Name(name))
	if method == nil {
		return otherMethod, false
	}
	return fullMethod, !method.IsStreamingClient() && !method.IsStreamingServer()
}

// serveMetrics serves the metrics listener's handler (see
// Gateway.MetricsHandler) on ln, in plain HTTP, until ctx is done.
func serveMetrics(ctx context.Context, ln net.Listener, handler http.Handler) error {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: readHeaderTimeout}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

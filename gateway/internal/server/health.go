package server

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// readyTimeout bounds one upstream health check, below a readiness probe's
// usual timeout so that the probe gets the 503 and its reason.
const readyTimeout = time.Second

// healthBody is the JSON body of /healthz and /readyz.
type healthBody struct {
	Status   string `json:"status"`
	Upstream string `json:"upstream,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// registerHealth adds GET /healthz and GET /readyz to mux. The HTTP listener
// and the metrics listener both have them, with the one readiness.
func registerHealth(mux *http.ServeMux, ready *readiness) {
	mux.HandleFunc("GET /healthz", handleHealthz)
	mux.Handle("GET /readyz", ready)
}

// handleHealthz answers 200 while the process serves HTTP.
func handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeHealth(w, http.StatusOK, healthBody{Status: "ok"})
}

// readiness answers /readyz: 200 when the upstream's grpc.health.v1 reports
// the server (service "") SERVING, 503 with the reason otherwise.
type readiness struct {
	client   healthpb.HealthClient
	upstream string
	timeout  time.Duration
}

func (h *readiness) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	resp, err := h.client.Check(ctx, &healthpb.HealthCheckRequest{Service: ""})
	switch {
	case err != nil:
		st := status.Convert(err)
		writeHealth(w, http.StatusServiceUnavailable, healthBody{
			Status:   "unavailable",
			Upstream: h.upstream,
			Reason:   "upstream health check failed: " + st.Code().String() + ": " + st.Message(),
		})
	case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		writeHealth(w, http.StatusServiceUnavailable, healthBody{
			Status:   "unavailable",
			Upstream: h.upstream,
			Reason:   "upstream reports " + resp.GetStatus().String(),
		})
	default:
		writeHealth(w, http.StatusOK, healthBody{Status: "ok", Upstream: h.upstream})
	}
}

func writeHealth(w http.ResponseWriter, code int, body healthBody) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

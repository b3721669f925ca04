package server

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func decodeHealth(t *testing.T, body []byte) healthBody {
	t.Helper()
	var h healthBody
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return h
}

func TestHealthz(t *testing.T) {
	// No upstream at all: /healthz only says the process serves.
	gw := startGateway(t, closedAddr(t))
	resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/healthz", nil))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
		t.Errorf("status %d, body %s", resp.StatusCode, body)
	}
}

func TestReadyzFollowsUpstreamHealth(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	readyz := func() (int, healthBody) {
		resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/readyz", nil))
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		return resp.StatusCode, decodeHealth(t, body)
	}

	up.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if code, h := readyz(); code != http.StatusOK || h.Status != "ok" || h.Upstream != up.addr {
		t.Errorf("serving: %d %+v", code, h)
	}
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if code, h := readyz(); code != http.StatusServiceUnavailable || h.Status != "unavailable" ||
		!strings.Contains(h.Reason, "NOT_SERVING") {
		t.Errorf("not serving: %d %+v", code, h)
	}
}

func TestReadyzUpstreamDown(t *testing.T) {
	addr := closedAddr(t)
	gw := startGateway(t, addr)
	resp, body := do(t, newRequest(t, http.MethodGet, gw.URL+"/readyz", nil))
	h := decodeHealth(t, body)
	if resp.StatusCode != http.StatusServiceUnavailable || h.Upstream != addr ||
		!strings.Contains(h.Reason, "Unavailable") {
		t.Errorf("status %d, body %s", resp.StatusCode, body)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestMetricsListenerServesHealth: the metrics listener answers /healthz and
// /readyz as the HTTP listener does, alongside /metrics.
func TestMetricsListenerServesHealth(t *testing.T) {
	up := startUpstream(t)
	gw := startRunWithMetrics(t, up.addr)
	base := strings.TrimSuffix(gw.metricsURL, "/metrics")
	get := func(url string) (int, healthBody) {
		resp, body := do(t, newRequest(t, http.MethodGet, url, nil))
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type = %q", url, ct)
		}
		return resp.StatusCode, decodeHealth(t, body)
	}

	for _, url := range []string{base + "/healthz", gw.url + "/healthz"} {
		if code, h := get(url); code != http.StatusOK || h != (healthBody{Status: "ok"}) {
			t.Errorf("%s: %d %+v", url, code, h)
		}
	}
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, url := range []string{base + "/readyz", gw.url + "/readyz"} {
		if code, h := get(url); code != http.StatusOK || h != (healthBody{Status: "ok", Upstream: up.addr}) {
			t.Errorf("%s, upstream serving: %d %+v", url, code, h)
		}
	}
	up.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	for _, url := range []string{base + "/readyz", gw.url + "/readyz"} {
		if code, h := get(url); code != http.StatusServiceUnavailable || h.Status != "unavailable" ||
			!strings.Contains(h.Reason, "NOT_SERVING") {
			t.Errorf("%s, upstream not serving: %d %+v", url, code, h)
		}
	}
}

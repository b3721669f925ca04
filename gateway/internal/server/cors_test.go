package server

import (
	"net/http"
	"testing"
)

func TestCORSDisabledByDefault(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr)
	req := newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/t-1", nil)
	req.Header.Set("Origin", "https://app.example.com")
	resp, _ := do(t, req)
	for k := range resp.Header {
		if len(k) > 12 && k[:12] == "Access-Contr" {
			t.Errorf("CORS header %s sent with CORS disabled", k)
		}
	}
}

func TestCORSAllowList(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr, "--cors-origins", "https://app.example.com, http://localhost:3000")

	preflight := newRequest(t, http.MethodOptions, gw.URL+"/v1/tasks", nil)
	preflight.Header.Set("Origin", "http://localhost:3000")
	preflight.Header.Set("Access-Control-Request-Method", "POST")
	preflight.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	resp, _ := do(t, preflight)
	if resp.StatusCode != http.StatusNoContent ||
		resp.Header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" ||
		resp.Header.Get("Access-Control-Allow-Methods") != corsAllowMethods ||
		resp.Header.Get("Access-Control-Allow-Headers") != corsAllowHeaders {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}

	get := newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/t-1", nil)
	get.Header.Set("Origin", "https://app.example.com")
	resp, _ = do(t, get)
	if resp.StatusCode != http.StatusOK ||
		resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		resp.Header.Get("Access-Control-Expose-Headers") != "X-Request-Id" ||
		resp.Header.Get("Vary") != "Origin" {
		t.Errorf("simple request: %d %v", resp.StatusCode, resp.Header)
	}

	other := newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/t-1", nil)
	other.Header.Set("Origin", "https://evil.example.com")
	resp, _ = do(t, other)
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("origin not on the list got Access-Control-Allow-Origin %q", got)
	}
}

func TestCORSAnyOrigin(t *testing.T) {
	up := startUpstream(t)
	gw := startGateway(t, up.addr, "--cors-origins", "*")
	req := newRequest(t, http.MethodGet, gw.URL+"/v1/tasks/t-1", nil)
	req.Header.Set("Origin", "https://anywhere.example")
	resp, _ := do(t, req)
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin = %q, want *", got)
	}
}

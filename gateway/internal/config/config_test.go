package config

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:                "127.0.0.1:8080",
		Upstream:              "127.0.0.1:50051",
		UpstreamConnections:   8,
		SubmitBatchMax:        256,
		SubmitBatchesInFlight: 1,
		MaxRequestBytes:       4194304,
		ShutdownTimeout:       10 * time.Second,
		LogLevel:              slog.LevelInfo,
		LogFormat:             "json",
	}
	if cfg.CORSOrigins != nil || cfg.GRPCListen != "" || cfg.MetricsListen != "" || cfg.UpstreamTLS || cfg.UpstreamCAFile != "" || cfg.OpenAPIFile != "" {
		t.Errorf("unexpected non-default: %+v", cfg)
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("got %+v\nwant %+v", *cfg, want)
	}
}

func TestEnvFallbackAndFlagPrecedence(t *testing.T) {
	vars := map[string]string{
		"MESHPLANE_GATEWAY_LISTEN":                   "0.0.0.0:9000",
		"MESHPLANE_GATEWAY_UPSTREAM":                 "plane:50051",
		"MESHPLANE_GATEWAY_UPSTREAM_TLS":             "true",
		"MESHPLANE_GATEWAY_UPSTREAM_CA_FILE":         "/etc/ca.pem",
		"MESHPLANE_GATEWAY_UPSTREAM_SERVER_NAME":     "plane.internal",
		"MESHPLANE_GATEWAY_UPSTREAM_CONNECTIONS":     "8",
		"MESHPLANE_GATEWAY_CORS_ORIGINS":             " https://a.example , ,http://localhost:3000",
		"MESHPLANE_GATEWAY_MAX_REQUEST_BYTES":        "1048576",
		"MESHPLANE_GATEWAY_OPENAPI_FILE":             "/spec.json",
		"MESHPLANE_GATEWAY_SHUTDOWN_TIMEOUT":         "3s",
		"MESHPLANE_GATEWAY_LOG_LEVEL":                "debug",
		"MESHPLANE_GATEWAY_LOG_FORMAT":               "text",
		"MESHPLANE_GATEWAY_GRPC_LISTEN":              "0.0.0.0:9001",
		"MESHPLANE_GATEWAY_METRICS_LISTEN":           "0.0.0.0:9091",
		"MESHPLANE_GATEWAY_SUBMIT_BATCH_MAX":         "1",
		"MESHPLANE_GATEWAY_SUBMIT_BATCHES_IN_FLIGHT": "4",
		"MESHPLANE_GATEWAY_UPSTREAM_CERT_FILE":       "/etc/client.crt",
		"MESHPLANE_GATEWAY_UPSTREAM_KEY_FILE":        "/etc/client.key",
		"MESHPLANE_GATEWAY_TLS_CERT_FILE":            "/etc/tls.crt",
		"MESHPLANE_GATEWAY_TLS_KEY_FILE":             "/etc/tls.key",
		"MESHPLANE_GATEWAY_TLS_CLIENT_CA_FILE":       "/etc/clients.pem",
	}
	cfg, err := Parse([]string{"--upstream", "flag:1", "--max-request-bytes=10"}, env(vars), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Upstream != "flag:1" || cfg.MaxRequestBytes != 10 {
		t.Errorf("flags should win: %+v", cfg)
	}
	if cfg.Listen != "0.0.0.0:9000" || !cfg.UpstreamTLS || cfg.UpstreamCAFile != "/etc/ca.pem" ||
		cfg.UpstreamServerName != "plane.internal" || cfg.UpstreamConnections != 8 || cfg.OpenAPIFile != "/spec.json" ||
		cfg.ShutdownTimeout != 3*time.Second || cfg.LogLevel != slog.LevelDebug || cfg.LogFormat != "text" ||
		cfg.GRPCListen != "0.0.0.0:9001" || cfg.MetricsListen != "0.0.0.0:9091" || cfg.SubmitBatchMax != 1 ||
		cfg.SubmitBatchesInFlight != 4 || cfg.UpstreamCertFile != "/etc/client.crt" || cfg.UpstreamKeyFile != "/etc/client.key" ||
		cfg.TLSCertFile != "/etc/tls.crt" || cfg.TLSKeyFile != "/etc/tls.key" || cfg.TLSClientCAFile != "/etc/clients.pem" {
		t.Errorf("environment not applied: %+v", cfg)
	}
	if !slices.Equal(cfg.CORSOrigins, []string{"https://a.example", "http://localhost:3000"}) {
		t.Errorf("CORSOrigins = %q", cfg.CORSOrigins)
	}

	// A flag set explicitly to its default still beats the environment.
	cfg, err = Parse([]string{"--upstream-tls=false", "--upstream-ca-file="}, env(map[string]string{
		"MESHPLANE_GATEWAY_UPSTREAM_TLS": "true", "MESHPLANE_GATEWAY_UPSTREAM_CA_FILE": "/etc/ca.pem",
	}), io.Discard)
	if err != nil || cfg.UpstreamTLS || cfg.UpstreamCAFile != "" {
		t.Errorf("got %+v, %v", cfg, err)
	}

	// The pairs' flags beat their variables one by one.
	cfg, err = Parse([]string{"--tls-cert-file", "/flag.crt", "--upstream-key-file", "/flag.key"}, env(map[string]string{
		"MESHPLANE_GATEWAY_TLS_CERT_FILE": "/env.crt", "MESHPLANE_GATEWAY_TLS_KEY_FILE": "/env.key",
		"MESHPLANE_GATEWAY_UPSTREAM_CERT_FILE": "/env-client.crt", "MESHPLANE_GATEWAY_UPSTREAM_KEY_FILE": "/env-client.key",
	}), io.Discard)
	if err != nil || cfg.TLSCertFile != "/flag.crt" || cfg.TLSKeyFile != "/env.key" ||
		cfg.UpstreamCertFile != "/env-client.crt" || cfg.UpstreamKeyFile != "/flag.key" {
		t.Errorf("got %+v, %v", cfg, err)
	}
}

// TestTLSPairsGoTogether: a certificate without its key, or a key without
// its certificate, is an error naming both settings, from flags or
// environment alike.
func TestTLSPairsGoTogether(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"upstream cert alone", []string{"--upstream-tls", "--upstream-cert-file", "/c.pem"}, nil,
			[]string{"--upstream-cert-file (MESHPLANE_GATEWAY_UPSTREAM_CERT_FILE)", "--upstream-key-file (MESHPLANE_GATEWAY_UPSTREAM_KEY_FILE)"}},
		{"upstream key alone, from the environment", nil, map[string]string{"MESHPLANE_GATEWAY_UPSTREAM_KEY_FILE": "/k.pem"},
			[]string{"--upstream-cert-file", "--upstream-key-file"}},
		{"serving cert alone", []string{"--tls-cert-file", "/c.pem"}, nil,
			[]string{"--tls-cert-file (MESHPLANE_GATEWAY_TLS_CERT_FILE)", "--tls-key-file (MESHPLANE_GATEWAY_TLS_KEY_FILE)"}},
		{"serving key alone, from the environment", nil, map[string]string{"MESHPLANE_GATEWAY_TLS_KEY_FILE": "/k.pem"},
			[]string{"--tls-cert-file", "--tls-key-file"}},
		{"client CA without a serving certificate", []string{"--tls-client-ca-file", "/ca.pem"}, nil,
			[]string{"--tls-client-ca-file", "--tls-cert-file", "--tls-key-file"}},
	} {
		_, err := Parse(tc.args, env(tc.env), io.Discard)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, want := range tc.want {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, want)
			}
		}
	}

	for _, args := range [][]string{
		{"--upstream-tls", "--upstream-cert-file", "/c.pem", "--upstream-key-file", "/k.pem"},
		{"--tls-cert-file", "/c.pem", "--tls-key-file", "/k.pem", "--tls-client-ca-file", "/ca.pem"},
	} {
		if _, err := Parse(args, env(nil), io.Discard); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
}

func TestInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad env bool", nil, map[string]string{"MESHPLANE_GATEWAY_UPSTREAM_TLS": "maybe"}, "MESHPLANE_GATEWAY_UPSTREAM_TLS"},
		{"bad env size", nil, map[string]string{"MESHPLANE_GATEWAY_MAX_REQUEST_BYTES": "4MB"}, "MESHPLANE_GATEWAY_MAX_REQUEST_BYTES"},
		{"zero size", []string{"--max-request-bytes", "0"}, nil, "--max-request-bytes"},
		{"no connections", []string{"--upstream-connections", "0"}, nil, "--upstream-connections"},
		{"too many connections", nil, map[string]string{"MESHPLANE_GATEWAY_UPSTREAM_CONNECTIONS": "65"}, "--upstream-connections"},
		{"no batch", []string{"--submit-batch-max", "0"}, nil, "--submit-batch-max"},
		{"batch over the plane's limit", []string{"--submit-batch-max", "1001"}, nil, "--submit-batch-max"},
		{"no batches in flight", nil, map[string]string{"MESHPLANE_GATEWAY_SUBMIT_BATCHES_IN_FLIGHT": "0"}, "--submit-batches-in-flight"},
		{"empty upstream", []string{"--upstream", ""}, nil, "--upstream"},
		{"bad log level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"bad log format", []string{"--log-format", "xml"}, nil, "--log-format"},
		{"unknown flag", []string{"--nope"}, nil, "nope"},
		{"positional", []string{"extra"}, nil, "unexpected arguments"},
	} {
		_, err := Parse(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestIgnoredTLSSettings(t *testing.T) {
	cfg, err := Parse([]string{"--upstream-ca-file", "/ca.pem", "--upstream-server-name", "plane"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.IgnoredTLSSettings(); len(got) != 2 || !strings.Contains(got[0], "--upstream-ca-file") {
		t.Errorf("IgnoredTLSSettings() = %q", got)
	}
	cfg.UpstreamTLS = true
	if got := cfg.IgnoredTLSSettings(); got != nil {
		t.Errorf("with TLS: IgnoredTLSSettings() = %q", got)
	}

	// The client pair is the upstream's too; the serving pair is not.
	cfg, err = Parse(nil, env(map[string]string{
		"MESHPLANE_GATEWAY_UPSTREAM_CERT_FILE": "/c.pem", "MESHPLANE_GATEWAY_UPSTREAM_KEY_FILE": "/k.pem",
		"MESHPLANE_GATEWAY_TLS_CERT_FILE": "/s.pem", "MESHPLANE_GATEWAY_TLS_KEY_FILE": "/sk.pem",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--upstream-cert-file (MESHPLANE_GATEWAY_UPSTREAM_CERT_FILE)", "--upstream-key-file (MESHPLANE_GATEWAY_UPSTREAM_KEY_FILE)"}
	if got := cfg.IgnoredTLSSettings(); !slices.Equal(got, want) {
		t.Errorf("IgnoredTLSSettings() = %q, want %q", got, want)
	}
	cfg.UpstreamTLS = true
	if got := cfg.IgnoredTLSSettings(); got != nil {
		t.Errorf("with TLS: IgnoredTLSSettings() = %q", got)
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	_, err := Parse([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, name := range []string{"-upstream-cert-file", "-upstream-key-file", "-tls-cert-file", "-tls-key-file", "-tls-client-ca-file"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("usage lacks %s", name)
		}
	}
	if !strings.Contains(out.String(), "-upstream-server-name") || !strings.Contains(out.String(), "MESHPLANE_GATEWAY_UPSTREAM") {
		t.Errorf("usage:\n%s", out.String())
	}
}

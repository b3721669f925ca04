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
		cfg.SubmitBatchesInFlight != 4 {
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
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	_, err := Parse([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(out.String(), "-upstream-server-name") || !strings.Contains(out.String(), "MESHPLANE_GATEWAY_UPSTREAM") {
		t.Errorf("usage:\n%s", out.String())
	}
}

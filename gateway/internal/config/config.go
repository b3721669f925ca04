// Package config reads the gateway's settings from command-line flags, each
// with a MESHPLANE_GATEWAY_* environment variable as fallback (a flag given on
// the command line wins over its variable).
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// Defaults. The Helm chart and `meshplane up` rely on these names and values.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultUpstream        = "127.0.0.1:50051"
	DefaultMaxRequestBytes = 4 << 20
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultUpstreamConnections: the plane accepts one connection's calls one
	// at a time, so calls spread over a few connections are accepted in parallel.
	DefaultUpstreamConnections = 8
	maxUpstreamConnections     = 64
	// DefaultSubmitBatchMax: concurrent SubmitTask calls leave for the plane
	// as one BatchSubmitTasks call of up to this many (1: each on its own).
	DefaultSubmitBatchMax = 256
	maxSubmitBatch        = 1000 // BatchSubmitTasks' own limit
	// DefaultSubmitBatchesInFlight: one batch out at a time lets the next
	// grow with the load; more trade batch size for overlap.
	DefaultSubmitBatchesInFlight = 1
	maxSubmitBatchesInFlight     = 64
)

// Config is the validated gateway configuration.
type Config struct {
	// Listen is the HTTP listen address; port 0 picks a free port.
	Listen string
	// GRPCListen, when set, is where the gateway also serves the control
	// plane's gRPC API, forwarding every call (port 0 picks a free port).
	GRPCListen string
	// MetricsListen, when set, is where the gateway serves Prometheus
	// metrics at /metrics, and /healthz and /readyz as on Listen (port 0
	// picks a free port). It is plain HTTP, even with TLSCertFile set, so
	// probes reach it when Listen requires client certificates.
	MetricsListen string
	// TLSCertFile and TLSKeyFile, set together, are the PEM certificate
	// (chain) and key the gateway serves HTTPS on Listen and gRPC over TLS on
	// GRPCListen with. Both empty: plaintext.
	TLSCertFile string
	TLSKeyFile  string
	// TLSClientCAFile, when set (only with TLSCertFile), is a PEM CA bundle:
	// clients of Listen and GRPCListen must present a certificate it signed.
	// It is read again when the file changes.
	TLSClientCAFile string
	// SubmitBatchMax is the most SubmitTask calls sent upstream as one batch.
	SubmitBatchMax int
	// SubmitBatchesInFlight is how many submit batches may be out at once.
	SubmitBatchesInFlight int
	// Upstream is the control plane's gRPC address (host:port).
	Upstream string
	// UpstreamTLS dials the upstream with TLS instead of plaintext.
	UpstreamTLS bool
	// UpstreamCAFile is a PEM bundle that replaces the system roots. Without
	// UpstreamTLS it is ignored (see IgnoredTLSSettings).
	UpstreamCAFile string
	// UpstreamServerName overrides the name checked in the upstream's
	// certificate. Without UpstreamTLS it is ignored.
	UpstreamServerName string
	// UpstreamCertFile and UpstreamKeyFile, set together, are the PEM client
	// certificate (chain) and key presented to the upstream when it asks for
	// one (mutual TLS). Without UpstreamTLS they are ignored.
	UpstreamCertFile string
	UpstreamKeyFile  string
	// UpstreamConnections is how many connections calls to the upstream are
	// spread over, in turn.
	UpstreamConnections int
	// CORSOrigins are the browser origins allowed to call the API; "*" allows any.
	// Empty sends no CORS headers at all.
	CORSOrigins []string
	// MaxRequestBytes bounds a request body; larger ones get 413.
	MaxRequestBytes int64
	// OpenAPIFile, when set, is served at /openapi.json instead of the embedded spec.
	OpenAPIFile string
	// ShutdownTimeout bounds the graceful drain on SIGTERM/SIGINT.
	ShutdownTimeout time.Duration
	// LogLevel is the minimum level written to stderr.
	LogLevel slog.Level
	// LogFormat is "json" or "text".
	LogFormat string
}

// envPrefix is prepended to a flag's upper-cased, underscored name to form
// its environment variable, e.g. --upstream-tls → MESHPLANE_GATEWAY_UPSTREAM_TLS.
const envPrefix = "MESHPLANE_GATEWAY_"

// EnvName returns the environment variable that backs a flag.
func EnvName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse reads args (without the program name) and, for every flag not given
// there, the environment through lookupEnv. It returns flag.ErrHelp for
// -h/--help after writing the usage to output.
func Parse(args []string, lookupEnv func(string) (string, bool), output io.Writer) (*Config, error) {
	var (
		cfg         Config
		corsOrigins string
		logLevel    string
	)
	fs := flag.NewFlagSet("meshplane-gateway", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&cfg.Listen, "listen", DefaultListen, "HTTP listen address (host:port; port 0 picks a free one)")
	fs.StringVar(&cfg.GRPCListen, "grpc-listen", "", "also serve the control plane's gRPC API here, forwarding every call (host:port; empty: off)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus metrics at /metrics, and /healthz and /readyz as on --listen, here; always plain HTTP, even with --tls-cert-file (host:port; empty: off)")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "PEM certificate (chain): serve HTTPS on --listen and gRPC over TLS on --grpc-listen (with --tls-key-file; read again when the file changes; empty: plaintext)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&cfg.TLSClientCAFile, "tls-client-ca-file", "", "PEM CA bundle: require client certificates it signed on --listen and --grpc-listen (read again when the file changes; only with --tls-cert-file)")
	fs.IntVar(&cfg.SubmitBatchMax, "submit-batch-max", DefaultSubmitBatchMax, "most concurrent SubmitTask calls sent upstream as one BatchSubmitTasks call (1: no batching)")
	fs.IntVar(&cfg.SubmitBatchesInFlight, "submit-batches-in-flight", DefaultSubmitBatchesInFlight, "submit batches out to the upstream at once")
	fs.StringVar(&cfg.Upstream, "upstream", DefaultUpstream, "control plane gRPC address (host:port)")
	fs.BoolVar(&cfg.UpstreamTLS, "upstream-tls", false, "dial the upstream with TLS")
	fs.StringVar(&cfg.UpstreamCAFile, "upstream-ca-file", "", "PEM CA bundle to verify the upstream (default: system roots; only with --upstream-tls)")
	fs.StringVar(&cfg.UpstreamServerName, "upstream-server-name", "", "server name to verify in the upstream certificate (only with --upstream-tls)")
	fs.StringVar(&cfg.UpstreamCertFile, "upstream-cert-file", "", "PEM client certificate (chain) presented to the upstream (mutual TLS; with --upstream-key-file; read again when the file changes; only with --upstream-tls)")
	fs.StringVar(&cfg.UpstreamKeyFile, "upstream-key-file", "", "PEM private key of --upstream-cert-file (only with --upstream-tls)")
	fs.IntVar(&cfg.UpstreamConnections, "upstream-connections", DefaultUpstreamConnections, "connections to the upstream that calls are spread over")
	fs.StringVar(&corsOrigins, "cors-origins", "", `comma-separated browser origins allowed by CORS, or "*"; empty disables CORS`)
	fs.Int64Var(&cfg.MaxRequestBytes, "max-request-bytes", DefaultMaxRequestBytes, "largest accepted request body in bytes (larger: 413)")
	fs.StringVar(&cfg.OpenAPIFile, "openapi-file", "", "serve this OpenAPI document at /openapi.json instead of the embedded one")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", DefaultShutdownTimeout, "how long to drain in-flight requests on SIGTERM/SIGINT")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", "json", "log format on stderr: json or text")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: meshplane-gateway [flags]\n\nREST bridge (grpc-gateway v2) to the Meshplane control plane.\n"+
			"Every flag falls back to an environment variable, e.g. --upstream to %s.\n\n", EnvName("upstream"))
		fs.PrintDefaults()
	}

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := applyEnv(fs, lookupEnv); err != nil {
		return nil, err
	}

	cfg.CORSOrigins = splitList(corsOrigins)
	if err := cfg.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return nil, fmt.Errorf("%s: %w", Option("log-level"), err)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// applyEnv sets every flag that was not given on the command line from its
// environment variable, if that is set.
func applyEnv(fs *flag.FlagSet, lookupEnv func(string) (string, bool)) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := EnvName(f.Name)
		value, ok := lookupEnv(name)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, value); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", name, value, err))
		}
	})
	return errors.Join(errs...)
}

func (c *Config) validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, fmt.Errorf("%s must not be empty", Option("listen")))
	}
	if c.Upstream == "" {
		errs = append(errs, fmt.Errorf("%s must not be empty", Option("upstream")))
	}
	if c.UpstreamConnections < 1 || c.UpstreamConnections > maxUpstreamConnections {
		errs = append(errs, fmt.Errorf("%s must be between 1 and %d, got %d", Option("upstream-connections"), maxUpstreamConnections, c.UpstreamConnections))
	}
	if c.SubmitBatchMax < 1 || c.SubmitBatchMax > maxSubmitBatch {
		errs = append(errs, fmt.Errorf("%s must be between 1 and %d, got %d", Option("submit-batch-max"), maxSubmitBatch, c.SubmitBatchMax))
	}
	if c.SubmitBatchesInFlight < 1 || c.SubmitBatchesInFlight > maxSubmitBatchesInFlight {
		errs = append(errs, fmt.Errorf("%s must be between 1 and %d, got %d", Option("submit-batches-in-flight"), maxSubmitBatchesInFlight, c.SubmitBatchesInFlight))
	}
	if c.MaxRequestBytes <= 0 {
		errs = append(errs, fmt.Errorf("%s must be positive, got %d", Option("max-request-bytes"), c.MaxRequestBytes))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("%s must not be negative, got %s", Option("shutdown-timeout"), c.ShutdownTimeout))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("%s must be json or text, got %q", Option("log-format"), c.LogFormat))
	}
	if (c.UpstreamCertFile == "") != (c.UpstreamKeyFile == "") {
		errs = append(errs, fmt.Errorf("%s and %s must be given together", Option("upstream-cert-file"), Option("upstream-key-file")))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, fmt.Errorf("%s and %s must be given together", Option("tls-cert-file"), Option("tls-key-file")))
	}
	// Not merely ignored: without a serving certificate, the client
	// certificates it asks for would silently not be required.
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		errs = append(errs, fmt.Errorf("%s requires %s and %s", Option("tls-client-ca-file"), Option("tls-cert-file"), Option("tls-key-file")))
	}
	return errors.Join(errs...)
}

// IgnoredTLSSettings names the TLS settings given while TLS is off, which the
// gateway ignores (and should warn about): a chart may well set a CA bundle
// and switch TLS off separately.
func (c *Config) IgnoredTLSSettings() []string {
	if c.UpstreamTLS {
		return nil
	}
	var ignored []string
	if c.UpstreamCAFile != "" {
		ignored = append(ignored, Option("upstream-ca-file"))
	}
	if c.UpstreamServerName != "" {
		ignored = append(ignored, Option("upstream-server-name"))
	}
	if c.UpstreamCertFile != "" {
		ignored = append(ignored, Option("upstream-cert-file"))
	}
	if c.UpstreamKeyFile != "" {
		ignored = append(ignored, Option("upstream-key-file"))
	}
	return ignored
}

// Option names a setting both ways, flag and environment variable, for
// error messages: "--upstream (MESHPLANE_GATEWAY_UPSTREAM)".
func Option(flagName string) string {
	return "--" + flagName + " (" + EnvName(flagName) + ")"
}

// splitList splits a comma-separated list, trimming blanks and dropping empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

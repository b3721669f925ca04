// Package server is the Meshplane REST bridge: grpc-gateway handlers for the
// client-facing services, health endpoints, the OpenAPI document and its docs
// page, behind request-id, CORS, body-size and access-log middleware.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshplane/meshplane/gateway/internal/apidocs"
	"github.com/meshplane/meshplane/gateway/internal/config"
)

// HTTP server timeouts. There is no write timeout: streamed responses
// (WatchTask, Subscribe) stay open as long as the client listens.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
)

// maxSubmitBatchBytes bounds the requests in one submit batch (a larger
// single submit still goes, alone), well under the plane's message limit.
const maxSubmitBatchBytes = 4 << 20

// Gateway is the assembled HTTP handler, the gRPC ingress (when configured)
// and the upstream connections they share.
type Gateway struct {
	handler http.Handler
	grpc    *grpc.Server // nil unless cfg.GRPCListen is set
	tls     *tls.Config  // for the HTTP listener; nil unless cfg.TLSCertFile is set
	ready   *readiness   // /readyz, on the HTTP and the metrics listeners
	submits *submitCoalescer
	metrics *metrics
	close   func()
}

// New connects (lazily) to the upstream and builds the handler. Close it to
// release the upstream connections.
func New(cfg *config.Config, logger *slog.Logger) (*Gateway, error) {
	if ignored := cfg.IgnoredTLSSettings(); ignored != nil {
		logger.Warn("upstream TLS is off: ignoring TLS settings", "ignored", ignored)
	}
	spec, err := apidocs.LoadSpec(cfg.OpenAPIFile)
	if err != nil {
		return nil, err
	}
	opts, err := dialOptions(cfg, logger)
	if err != nil {
		return nil, err
	}
	serving, err := newServingTLS(cfg, logger)
	if err != nil {
		return nil, err
	}

	api, err := newAPIMux()
	if err != nil {
		return nil, err
	}
	upstream, err := dialPool(cfg.Upstream, cfg.UpstreamConnections, opts)
	if err != nil {
		return nil, err
	}
	m := newMetrics()
	submits := newSubmitCoalescer(upstream, cfg.SubmitBatchMax, cfg.SubmitBatchesInFlight, maxSubmitBatchBytes, m)
	closeUpstream := func() {
		submits.Close()
		_ = upstream.Close()
	}
	if err := registerServices(context.Background(), api, submits); err != nil {
		closeUpstream()
		return nil, err
	}
	var ingress *grpc.Server
	if cfg.GRPCListen != "" {
		var creds []grpc.ServerOption
		if serving != nil {
			creds = append(creds, grpc.Creds(credentials.NewTLS(serving.listenerConfig("h2"))))
		}
		ingress = newGRPCIngress(submits, maxUpstreamResponseBytes, m, creds...)
	}

	ready := &readiness{
		client:   healthpb.NewHealthClient(upstream),
		upstream: cfg.Upstream,
		timeout:  readyTimeout,
	}
	root := http.NewServeMux()
	registerHealth(root, ready)
	apidocs.Register(root, spec)
	root.Handle("/", withHeadAsGet(api))

	reject := func(w http.ResponseWriter, r *http.Request, code int, st *status.Status) {
		writeError(api, w, r, code, st)
	}
	var h http.Handler = root
	h = withBodyLimit(cfg.MaxRequestBytes, reject, h)
	h = withCORS(cfg.CORSOrigins, h)
	h = withAccessLog(logger, h)
	h = m.instrumentHTTP(h)
	h = withRequestID(h)

	var httpTLS *tls.Config
	if serving != nil {
		httpTLS = serving.listenerConfig("h2", "http/1.1")
	}
	return &Gateway{handler: h, grpc: ingress, tls: httpTLS, ready: ready, submits: submits, metrics: m, close: closeUpstream}, nil
}

// servingTLS is the TLS of the gateway's own HTTP and gRPC listeners. The
// certificate comes from a keyPairFiles and the client CA bundle, if any,
// from a clientCAFile, so replaced files apply to new connections.
type servingTLS struct {
	base      *tls.Config   // the certificate; with clientCAs, client certificates are required
	clientCAs *clientCAFile // nil: no client certificate is asked for
}

// newServingTLS reads the files cfg names, or returns nil for plaintext.
func newServingTLS(cfg *config.Config, logger *slog.Logger) (*servingTLS, error) {
	if cfg.TLSCertFile == "" {
		return nil, nil
	}
	pair, err := loadKeyPairFiles(cfg.TLSCertFile, cfg.TLSKeyFile, "tls-cert-file", "tls-key-file",
		logger.With("certificate", "serving", "cert_file", cfg.TLSCertFile))
	if err != nil {
		return nil, err
	}
	s := &servingTLS{base: &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: pair.getCertificate,
	}}
	if cfg.TLSClientCAFile != "" {
		s.clientCAs, err = loadClientCAFile(cfg.TLSClientCAFile, "tls-client-ca-file",
			logger.With("ca_file", cfg.TLSClientCAFile))
		if err != nil {
			return nil, err
		}
		s.base.ClientAuth = tls.RequireAndVerifyClientCert
		s.base.ClientCAs = s.clientCAs.pool() // each handshake gets the pool of its moment: see listenerConfig
	}
	return s, nil
}

// listenerConfig returns the TLS configuration of a listener that offers the
// given application protocols (ALPN).
//
// With a client CA bundle, each handshake is made with a copy of this
// configuration that carries the bundle's pool of the moment
// (GetConfigForClient); crypto/tls checks a resumed session's client
// certificate against that pool too. It uses that copy alone, NextProtos
// included, so they must be set here: what a server adds to its own clone of
// the configuration (http.Server.ServeTLS adds "h2" and "http/1.1") never
// reaches the copy. (The gRPC credentials apply their defaults, "h2"
// included, to the copy as well.)
func (s *servingTLS) listenerConfig(protocols ...string) *tls.Config {
	listener := s.base.Clone()
	listener.NextProtos = protocols
	if s.clientCAs != nil {
		handshake := listener.Clone()
		listener.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			config := handshake.Clone()
			config.ClientCAs = s.clientCAs.pool()
			return config, nil
		}
	}
	return listener
}

// Handler returns the gateway's HTTP handler.
func (g *Gateway) Handler() http.Handler { return g.handler }

// MetricsHandler serves the metrics listener: the gateway's Prometheus
// metrics at /metrics, and /healthz and /readyz as on the HTTP listener, for
// probes that cannot reach that one (it may require client certificates).
func (g *Gateway) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", g.metrics.handler())
	registerHealth(mux, g.ready)
	return mux
}

// GRPC returns the gRPC ingress, or nil when it is not configured.
func (g *Gateway) GRPC() *grpc.Server { return g.grpc }

// Close answers the submits still queued and releases the upstream connections.
func (g *Gateway) Close() { g.close() }

// Run serves the gateway on cfg.Listen until ctx is done, then shuts down
// gracefully within cfg.ShutdownTimeout. Once bound, it writes one line with
// the actual address to stdout.
func Run(ctx context.Context, cfg *config.Config, logger *slog.Logger, stdout io.Writer) error {
	gw, err := New(cfg, logger)
	if err != nil {
		return err
	}
	defer gw.Close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           gw.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	var grpcLn, metricsLn net.Listener
	if gw.GRPC() != nil {
		if grpcLn, err = net.Listen("tcp", cfg.GRPCListen); err != nil {
			_ = ln.Close()
			return err
		}
	}
	if cfg.MetricsListen != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			_ = ln.Close()
			if grpcLn != nil {
				_ = grpcLn.Close()
			}
			return err
		}
	}
	scheme, grpcTLS := "http", ""
	if gw.tls != nil {
		// It offers HTTP/2 and HTTP/1.1 already (see servingTLS.listenerConfig).
		srv.TLSConfig = gw.tls.Clone()
		scheme, grpcTLS = "https", " with TLS"
	}
	served := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			served <- srv.ServeTLS(ln, "", "") // the certificate comes from TLSConfig.GetCertificate
		} else {
			served <- srv.Serve(ln)
		}
	}()
	grpcServed := make(chan error, 1)
	if grpcLn != nil {
		go func() { grpcServed <- gw.GRPC().Serve(grpcLn) }()
	}
	// Scrapes are answered until the gateway has drained and stopped.
	metricsCtx, stopMetrics := context.WithCancel(context.Background())
	defer stopMetrics()
	metricsServed := make(chan error, 1)
	if metricsLn != nil {
		go func() { metricsServed <- serveMetrics(metricsCtx, metricsLn, gw.MetricsHandler()) }()
	}

	// The addresses bound, not the configured ones (port 0 picks a free one).
	url := scheme + "://" + ln.Addr().String()
	var grpcAddr, metricsAddr string
	fmt.Fprintf(stdout, "meshplane gateway listening on %s (upstream %s)\n", url, cfg.Upstream)
	if grpcLn != nil {
		grpcAddr = grpcLn.Addr().String()
		fmt.Fprintf(stdout, "meshplane gateway serving gRPC on %s%s (upstream %s)\n", grpcAddr, grpcTLS, cfg.Upstream)
	}
	if metricsLn != nil {
		metricsAddr = metricsLn.Addr().String()
		fmt.Fprintf(stdout, "meshplane gateway serving metrics on http://%s/metrics\n", metricsAddr)
	}
	logger.Info("gateway listening", "url", url, "grpc", grpcAddr, "metrics", metricsAddr, "tls", gw.tls != nil,
		"tls_client_auth", cfg.TLSClientCAFile != "", "upstream", cfg.Upstream, "upstream_tls", cfg.UpstreamTLS,
		"upstream_client_cert", cfg.UpstreamTLS && cfg.UpstreamCertFile != "", "cors_origins", cfg.CORSOrigins, "max_request_bytes", cfg.MaxRequestBytes,
		"submit_batch_max", cfg.SubmitBatchMax, "submit_batches_in_flight", cfg.SubmitBatchesInFlight)

	select {
	case err := <-served:
		return fmt.Errorf("serving HTTP: %w", err)
	case err := <-grpcServed:
		_ = srv.Close()
		return fmt.Errorf("serving gRPC: %w", err)
	case err := <-metricsServed:
		_ = srv.Close()
		if gw.GRPC() != nil {
			gw.GRPC().Stop()
		}
		return fmt.Errorf("serving metrics: %w", err)
	case <-ctx.Done():
	}

	logger.Info("gateway shutting down", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if gw.GRPC() != nil {
		stopGRPC(shutdownCtx, gw.GRPC())
	}
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Typically open streams (WatchTask, Subscribe): end them.
		logger.Warn("graceful shutdown incomplete, closing remaining connections", "error", err)
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving HTTP: %w", err)
	}
	logger.Info("gateway stopped")
	return nil
}

// stopGRPC lets the calls in flight finish until ctx is done, then ends the
// rest (typically streams).
func stopGRPC(ctx context.Context, server *grpc.Server) {
	stopped := make(chan struct{})
	go func() {
		server.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		server.Stop()
		<-stopped
	}
}

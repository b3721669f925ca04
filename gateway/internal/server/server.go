// Package server is the Meshplane REST bridge: grpc-gateway handlers for the
// client-facing services, health endpoints, the OpenAPI document and its docs
// page, behind request-id, CORS, body-size and access-log middleware.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

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

// Gateway is the assembled HTTP handler and the upstream connections it owns.
type Gateway struct {
	handler http.Handler
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
	opts, err := dialOptions(cfg)
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
	if err := registerServices(context.Background(), api, upstream); err != nil {
		_ = upstream.Close()
		return nil, err
	}

	root := http.NewServeMux()
	root.HandleFunc("GET /healthz", handleHealthz)
	root.Handle("GET /readyz", &readiness{
		client:   healthpb.NewHealthClient(upstream),
		upstream: cfg.Upstream,
		timeout:  readyTimeout,
	})
	apidocs.Register(root, spec)
	root.Handle("/", api)

	reject := func(w http.ResponseWriter, r *http.Request, code int, st *status.Status) {
		writeError(api, w, r, code, st)
	}
	var h http.Handler = root
	h = withBodyLimit(cfg.MaxRequestBytes, reject, h)
	h = withCORS(cfg.CORSOrigins, h)
	h = withAccessLog(logger, h)
	h = withRequestID(h)

	return &Gateway{
		handler: h,
		close:   func() { _ = upstream.Close() },
	}, nil
}

// Handler returns the gateway's HTTP handler.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Close releases the upstream connections.
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
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	url := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "meshplane gateway listening on %s (upstream %s)\n", url, cfg.Upstream)
	logger.Info("gateway listening", "url", url, "upstream", cfg.Upstream,
		"upstream_tls", cfg.UpstreamTLS, "cors_origins", cfg.CORSOrigins, "max_request_bytes", cfg.MaxRequestBytes)

	select {
	case err := <-served:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}

	logger.Info("gateway shutting down", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
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

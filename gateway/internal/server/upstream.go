package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/meshplane/meshplane/gateway/internal/config"
	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// maxUpstreamResponseBytes lifts gRPC's 4 MiB default for messages received
// from the control plane, so a large page of tasks still reaches the client.
const maxUpstreamResponseBytes = 64 << 20

// service is one client-facing gRPC service and its generated grpc-gateway
// registration, forwarding over the given connection(s).
type service struct {
	name     string
	register func(context.Context, *runtime.ServeMux, grpc.ClientConnInterface) error
}

// clientServices lists every service with google.api.http annotations. A test
// checks it against the proto registry, so a new client-facing service fails
// the build's tests until it is added here. AgentLinkService is worker-only.
// TaskService's REST submits get the call's correlation id (correlatingTasks).
var clientServices = []service{
	{meshplanev1.TaskService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return meshplanev1.RegisterTaskServiceHandlerClient(ctx, mux, correlatingTasks{meshplanev1.NewTaskServiceClient(cc)})
	}},
	{meshplanev1.AgentService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return meshplanev1.RegisterAgentServiceHandlerClient(ctx, mux, meshplanev1.NewAgentServiceClient(cc))
	}},
	{meshplanev1.ChannelService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return meshplanev1.RegisterChannelServiceHandlerClient(ctx, mux, meshplanev1.NewChannelServiceClient(cc))
	}},
	{meshplanev1.StateService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return meshplanev1.RegisterStateServiceHandlerClient(ctx, mux, meshplanev1.NewStateServiceClient(cc))
	}},
	{meshplanev1.AuditService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return meshplanev1.RegisterAuditServiceHandlerClient(ctx, mux, meshplanev1.NewAuditServiceClient(cc))
	}},
}

// registerServices registers every client-facing service on mux, forwarding
// over upstream.
func registerServices(ctx context.Context, mux *runtime.ServeMux, upstream grpc.ClientConnInterface) error {
	for _, s := range clientServices {
		if err := s.register(ctx, mux, upstream); err != nil {
			return fmt.Errorf("registering %s: %w", s.name, err)
		}
	}
	return nil
}

// dialOptions returns how to reach the upstream: plaintext or TLS (with a
// client certificate, if configured), and the largest response accepted.
func dialOptions(cfg *config.Config, logger *slog.Logger) ([]grpc.DialOption, error) {
	creds, err := transportCredentials(cfg, logger)
	if err != nil {
		return nil, err
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxUpstreamResponseBytes)),
		// Streams forwarded for a long time (watches, subscriptions, agents through the ingress) notice
		// a vanished plane (no RST, e.g. a dead host) within ~15 s, as the SDKs' agents do; the plane
		// allows pings 5 s apart, idle or not.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}, nil
}

func transportCredentials(cfg *config.Config, logger *slog.Logger) (credentials.TransportCredentials, error) {
	if !cfg.UpstreamTLS {
		return insecure.NewCredentials(), nil
	}
	tlsConfig := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: cfg.UpstreamServerName,
	}
	if cfg.UpstreamCAFile != "" {
		pool, err := loadCAFile(cfg.UpstreamCAFile, "upstream-ca-file")
		if err != nil {
			return nil, err
		}
		tlsConfig.RootCAs = pool
	}
	if cfg.UpstreamCertFile != "" {
		// Each new connection asks for the pair, so a rotated certificate
		// goes out on the next (re)connection.
		pair, err := loadKeyPairFiles(cfg.UpstreamCertFile, cfg.UpstreamKeyFile, "upstream-cert-file", "upstream-key-file",
			logger.With("certificate", "upstream client", "cert_file", cfg.UpstreamCertFile))
		if err != nil {
			return nil, err
		}
		tlsConfig.GetClientCertificate = pair.getClientCertificate
	}
	return credentials.NewTLS(tlsConfig), nil
}

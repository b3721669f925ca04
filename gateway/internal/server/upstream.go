package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
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
var clientServices = []service{
	{meshplanev1.TaskService_ServiceDesc.ServiceName, func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return meshplanev1.RegisterTaskServiceHandlerClient(ctx, mux, meshplanev1.NewTaskServiceClient(cc))
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

// dialOptions returns how to reach the upstream: plaintext or TLS, and the
// largest response accepted.
func dialOptions(cfg *config.Config) ([]grpc.DialOption, error) {
	creds, err := transportCredentials(cfg)
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

func transportCredentials(cfg *config.Config) (credentials.TransportCredentials, error) {
	if !cfg.UpstreamTLS {
		return insecure.NewCredentials(), nil
	}
	tlsConfig := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: cfg.UpstreamServerName,
	}
	if cfg.UpstreamCAFile != "" {
		pem, err := os.ReadFile(cfg.UpstreamCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading upstream CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream CA file %s holds no PEM certificate", cfg.UpstreamCAFile)
		}
		tlsConfig.RootCAs = pool
	}
	return credentials.NewTLS(tlsConfig), nil
}

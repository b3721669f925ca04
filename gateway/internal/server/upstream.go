package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshplane/meshplane/gateway/internal/config"
	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// maxUpstreamResponseBytes lifts gRPC's 4 MiB default for messages received
// from the control plane, so a large page of tasks still reaches the client.
const maxUpstreamResponseBytes = 64 << 20

// service is one client-facing gRPC service and its generated grpc-gateway registration.
type service struct {
	name     string
	register func(context.Context, *runtime.ServeMux, string, []grpc.DialOption) error
}

// clientServices lists every service with google.api.http annotations. A test
// checks it against the proto registry, so a new client-facing service fails
// the build's tests until it is added here. AgentLinkService is worker-only.
var clientServices = []service{
	{meshplanev1.TaskService_ServiceDesc.ServiceName, meshplanev1.RegisterTaskServiceHandlerFromEndpoint},
	{meshplanev1.AgentService_ServiceDesc.ServiceName, meshplanev1.RegisterAgentServiceHandlerFromEndpoint},
	{meshplanev1.ChannelService_ServiceDesc.ServiceName, meshplanev1.RegisterChannelServiceHandlerFromEndpoint},
	{meshplanev1.StateService_ServiceDesc.ServiceName, meshplanev1.RegisterStateServiceHandlerFromEndpoint},
}

// registerServices registers every client-facing service on mux. The
// connections it opens close when ctx is done.
func registerServices(ctx context.Context, mux *runtime.ServeMux, upstream string, opts []grpc.DialOption) error {
	for _, s := range clientServices {
		if err := s.register(ctx, mux, upstream, opts); err != nil {
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

package meshplane

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

const maxMessageBytes = 64 * 1024 * 1024

// bearerToken sends `authorization: Bearer <token>` on every call (docs/agent-link.md,
// Authentication). It is allowed on plaintext connections: the mesh decides what it accepts.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

// dial opens a (lazy) client connection: plaintext unless the dial options say otherwise.
// gRPC's own reconnect backoff is capped at maxBackoff (its default grows to 2 minutes), so a
// restarted control plane is found again as soon as our reconnect loop asks.
//
// With keepalive (agents), pings notice a vanished control plane (no RST, e.g. a dead host)
// within ~15s; not more often than the plane allows without data (5s).
func dial(target, token string, maxBackoff time.Duration, keepalives bool, extra []grpc.DialOption) (*grpc.ClientConn, error) {
	if maxBackoff <= 0 {
		maxBackoff = DefaultBackoffMax
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}),
		// Frames carry many assignments or results at once: allow what the plane allows.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
	}
	if keepalives {
		opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true,
		}))
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(token)))
	}
	opts = append(opts, extra...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("meshplane: connect to %s: %w", target, err)
	}
	return conn, nil
}

func contextError(code codes.Code) error {
	switch code {
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	}
	return nil
}

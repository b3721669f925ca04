package meshplane

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
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

// dial opens a (lazy) client connection: over TLS with creds, plaintext when creds is nil, unless
// the extra dial options say otherwise (they come last).
// gRPC's own reconnect backoff is capped at maxBackoff (its default grows to 2 minutes), so a
// restarted control plane is found again as soon as our reconnect loop asks.
//
// With keepalive (agents), pings notice a vanished control plane (no RST, e.g. a dead host)
// within ~15s; not more often than the plane allows without data (5s).
func dial(target, token string, creds credentials.TransportCredentials, maxBackoff time.Duration, keepalives bool, extra []grpc.DialOption) (*grpc.ClientConn, error) {
	if maxBackoff <= 0 {
		maxBackoff = DefaultBackoffMax
	}
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
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

// maxConnections bounds [WithConnections].
const maxConnections = 64

// connPool is several client connections that calls take in turn. grpc-go keeps one HTTP/2
// connection per address in a ClientConn, and the control plane accepts the calls of one
// connection one at a time (it listens with several servers on one port; the kernel spreads
// connections, not calls, over them).
type connPool struct {
	conns []*grpc.ClientConn
	next  atomic.Uint64
}

var _ grpc.ClientConnInterface = (*connPool)(nil)

func dialPool(size int, dialOne func() (*grpc.ClientConn, error)) (*connPool, error) {
	p := &connPool{}
	for range size {
		conn, err := dialOne()
		if err != nil {
			_ = p.Close()
			return nil, err
		}
		p.conns = append(p.conns, conn)
	}
	return p, nil
}

func (p *connPool) pick() *grpc.ClientConn {
	return p.conns[(p.next.Add(1)-1)%uint64(len(p.conns))]
}

func (p *connPool) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return p.pick().Invoke(ctx, method, args, reply, opts...)
}

func (p *connPool) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return p.pick().NewStream(ctx, desc, method, opts...)
}

// Close closes every connection.
func (p *connPool) Close() error {
	var errs []error
	for _, conn := range p.conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
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

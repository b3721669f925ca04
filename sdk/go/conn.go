package meshplane

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// roundRobin is the load-balancing policy of agents and clients: with a target naming several
// addresses ("ipv4:host:port,host:port", a DNS name with several addresses), each new stream or
// call goes to the next ready address instead of all to the first one that accepted a connection
// (pick_first). One address works as before.
const roundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// targetDialOptions come before the user's dial options (which may override them), for agents and
// clients alike: round_robin, and the ipv4/ipv6 targets of gRPC's naming doc, which grpc-go does
// not resolve itself. Check the target first with [checkTarget], which fails early on a bad list.
func targetDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithResolvers(ipResolverBuilder{scheme: "ipv4"}, ipResolverBuilder{scheme: "ipv6"}),
	}
}

// The longest calls still under way on a replaced agent connection get before it closes (it
// closes as soon as none is left).
const retiredConnGrace = 30 * time.Second

// agentConn is an agent's connection to the control plane. The reconnect loop replaces it by a
// new one (new TCP connections) after a session failed before registration: a stream on the same
// HTTP/2 connection would reach the same replica, whereas behind a load balancer a new connection
// may reach another. Calls take the current connection. A replaced one closes as soon as no call
// uses it, at the latest once a grace passed: the calls under way on it may finish first, and an
// idle one holds no TCP connection (and no replica's session slot) for nothing.
type agentConn struct {
	dial     func() (*grpc.ClientConn, error)
	mu       sync.Mutex
	current  *grpc.ClientConn
	calls    map[*grpc.ClientConn]int // calls and streams under way, by connection
	retiring map[*grpc.ClientConn]*time.Timer
	closed   bool
}

var _ grpc.ClientConnInterface = (*agentConn)(nil)

func newAgentConn(dial func() (*grpc.ClientConn, error)) (*agentConn, error) {
	conn, err := dial()
	if err != nil {
		return nil, err
	}
	return &agentConn{dial: dial, current: conn, calls: map[*grpc.ClientConn]int{}, retiring: map[*grpc.ClientConn]*time.Timer{}}, nil
}

func (c *agentConn) conn() *grpc.ClientConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// acquire is the current connection, counted as used by one more call until release.
func (c *agentConn) acquire() *grpc.ClientConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[c.current]++
	return c.current
}

// release ends a call's use of conn; the last call on a replaced connection closes it.
func (c *agentConn) release(conn *grpc.ClientConn) {
	c.mu.Lock()
	c.calls[conn]--
	idle := c.calls[conn] <= 0
	if idle {
		delete(c.calls, conn)
	}
	c.mu.Unlock()
	if idle {
		c.closeRetired(conn) // does nothing unless conn was replaced and is still open
	}
}

func (c *agentConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	conn := c.acquire()
	defer c.release(conn)
	return conn.Invoke(ctx, method, args, reply, opts...)
}

func (c *agentConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	conn := c.acquire()
	stream, err := conn.NewStream(ctx, desc, method, opts...)
	if err != nil {
		c.release(conn)
		return nil, err
	}
	return newTrackedStream(ctx, stream, desc, func() { c.release(conn) }), nil
}

// reconnect replaces the connection by a new one, which starts connecting now (the reconnect
// loop's backoff gives it time to reach every address before the next stream). The old one
// closes at once when no call uses it, else when the last one ends (or the grace passed).
func (c *agentConn) reconnect() error {
	fresh, err := c.dial()
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fresh.Close()
	}
	old := c.current
	c.current = fresh
	c.retiring[old] = time.AfterFunc(retiredConnGrace, func() { c.closeRetired(old) })
	idle := c.calls[old] == 0
	c.mu.Unlock()
	fresh.Connect()
	if idle {
		c.closeRetired(old)
	}
	return nil
}

// closeRetired closes a replaced connection once (its last call ended, or its grace passed).
func (c *agentConn) closeRetired(old *grpc.ClientConn) {
	c.mu.Lock()
	timer, ok := c.retiring[old]
	delete(c.retiring, old)
	c.mu.Unlock()
	if ok {
		timer.Stop()
		_ = old.Close()
	}
}

// Close closes the connection and those replaced (calls still under way on them fail).
func (c *agentConn) Close() error {
	c.mu.Lock()
	c.closed = true
	conns := []*grpc.ClientConn{c.current}
	for old, timer := range c.retiring {
		timer.Stop()
		conns = append(conns, old)
	}
	clear(c.retiring)
	c.mu.Unlock()
	var errs []error
	for _, conn := range conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

// trackedStream calls finished once its stream is over: RecvMsg returned an error (io.EOF at its
// end), the only answer of a stream whose server sends one came, or its context ended (how grpc-go
// callers abandon a stream).
type trackedStream struct {
	grpc.ClientStream
	serverStreams bool
	finished      func()
}

func newTrackedStream(ctx context.Context, stream grpc.ClientStream, desc *grpc.StreamDesc, finished func()) *trackedStream {
	once := sync.OnceFunc(finished)
	stop := context.AfterFunc(ctx, once)
	return &trackedStream{ClientStream: stream, serverStreams: desc.ServerStreams, finished: func() { stop(); once() }}
}

func (s *trackedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil || !s.serverStreams {
		s.finished()
	}
	return err
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

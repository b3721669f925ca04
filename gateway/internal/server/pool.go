package server

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
)

// connPool spreads calls over several connections to the control plane, in
// turn. A grpc.ClientConn keeps one HTTP/2 connection to an address, and the
// plane's grpc.aio servers accept the calls of one connection one at a time (it
// listens with several servers on one port, and the kernel spreads connections,
// not calls, over them), so one connection would put every REST call behind one
// of the plane's accept loops.
type connPool struct {
	conns []*grpc.ClientConn
	next  atomic.Uint64
}

var _ grpc.ClientConnInterface = (*connPool)(nil)

// dialPool opens size connections to target (lazily, as grpc.NewClient does).
func dialPool(target string, size int, opts []grpc.DialOption) (*connPool, error) {
	if size < 1 {
		return nil, fmt.Errorf("a connection pool needs at least one connection, got %d", size)
	}
	p := &connPool{}
	for range size {
		conn, err := grpc.NewClient(target, opts...)
		if err != nil {
			_ = p.Close()
			return nil, fmt.Errorf("connecting to %s: %w", target, err)
		}
		p.conns = append(p.conns, conn)
	}
	return p, nil
}

func (p *connPool) pick() *grpc.ClientConn {
	return p.conns[(p.next.Add(1)-1)%uint64(len(p.conns))]
}

// Invoke makes a unary call on the next connection.
func (p *connPool) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return p.pick().Invoke(ctx, method, args, reply, opts...)
}

// NewStream opens a stream on the next connection.
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

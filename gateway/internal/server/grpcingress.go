package server

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Metadata a gRPC server receives that describes the incoming connection
// rather than the call; the upstream call sets its own.
var connectionHeaders = []string{":authority", "content-type", "user-agent"}

// newGRPCIngress returns a gRPC server that forwards every call, whatever its
// service, to upstream as it came: messages as bytes, metadata, deadline and
// cancellation one way; headers, messages, trailers and status (with its
// details) the other. SubmitTask goes through upstream's Invoke, so the
// submit coalescer batches it with the REST bridge's submits. opts come
// first (transport credentials, for TLS).
func newGRPCIngress(upstream grpc.ClientConnInterface, maxMessageBytes int, m *metrics, opts ...grpc.ServerOption) *grpc.Server {
	ingress := &grpcIngress{upstream: upstream}
	return grpc.NewServer(append(opts,
		grpc.ForceServerCodec(rawCodec{}),
		grpc.StreamInterceptor(m.streamInterceptor),
		grpc.UnknownServiceHandler(ingress.forward),
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxSendMsgSize(maxMessageBytes),
		// The plane's own policy, which the SDKs' agents ping by (every 10 s, idle or not); grpc-go's
		// default (5 min, not without streams) would close their connections.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)...)
}

type grpcIngress struct {
	upstream grpc.ClientConnInterface
}

// streamDesc opens every forwarded call as a bidirectional stream: a proxy
// does not know a method's shape, and a stream carries any of them.
var streamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

func (g *grpcIngress) forward(_ any, in grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(in)
	if !ok {
		return status.Error(codes.Internal, "no method on the incoming stream")
	}
	md, _ := metadata.FromIncomingContext(in.Context())
	md = md.Copy()
	for _, k := range connectionHeaders {
		delete(md, k)
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(in.Context(), md))
	defer cancel()
	if method == submitMethod {
		return g.forwardSubmit(ctx, in)
	}

	out, err := g.upstream.NewStream(ctx, streamDesc, method, forwardRaw)
	if err != nil {
		return err
	}
	go forwardRequests(in, out, cancel)
	header, err := out.Header()
	if err == nil && len(header) > 0 {
		if err := in.SendHeader(header); err != nil {
			return err
		}
	}
	for {
		message := &rawMessage{}
		if err := out.RecvMsg(message); err != nil {
			in.SetTrailer(out.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err // the upstream's status, details included
		}
		if err := in.SendMsg(message); err != nil {
			return err
		}
	}
}

// forwardRequests copies the caller's messages upstream until the caller
// half-closes (then half-closes upstream) or fails (then cancels the call).
// When the upstream stops taking messages, its reason reaches the caller
// through RecvMsg.
func forwardRequests(in grpc.ServerStream, out grpc.ClientStream, cancel context.CancelFunc) {
	for {
		message := &rawMessage{}
		if err := in.RecvMsg(message); err != nil {
			if errors.Is(err, io.EOF) {
				_ = out.CloseSend()
			} else {
				cancel()
			}
			return
		}
		if err := out.SendMsg(message); err != nil {
			return
		}
	}
}

func (g *grpcIngress) forwardSubmit(ctx context.Context, in grpc.ServerStream) error {
	request := &rawMessage{}
	if err := in.RecvMsg(request); err != nil {
		return err
	}
	response := &rawMessage{}
	if err := g.upstream.Invoke(ctx, submitMethod, request, response, forwardRaw); err != nil {
		return err
	}
	return in.SendMsg(response)
}

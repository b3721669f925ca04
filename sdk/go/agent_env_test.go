package meshplane

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// tokenPlane refuses link streams without its token, as a plane with auth tokens does, and tells
// which token each stream brought.
type tokenPlane struct {
	pb.UnimplementedAgentLinkServiceServer
	token string
	seen  chan string
}

func (p *tokenPlane) Connect(stream grpc.BidiStreamingServer[pb.ConnectRequest, pb.ConnectResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	got := strings.TrimPrefix(strings.Join(md.Get("authorization"), ""), "Bearer ")
	p.seen <- got
	if got != p.token {
		return status.Error(codes.Unauthenticated, "missing or invalid bearer token")
	}
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return stream.Send(&pb.ConnectResponse{Frame: &pb.ConnectResponse_Registered{Registered: &pb.Registered{
		SessionId: "s-1", HeartbeatInterval: durationpb.New(time.Second), LeaseTimeout: durationpb.New(10 * time.Second),
	}}})
}

func startTokenPlane(t *testing.T, token string) (string, *tokenPlane) {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	plane := &tokenPlane{token: token, seen: make(chan string, 16)}
	pb.RegisterAgentLinkServiceServer(server, plane)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return listener.Addr().String(), plane
}

func TestAgentsOfOneProcessGetTheirOwnDefaultInstanceIDs(t *testing.T) {
	a, err := NewAgent("first")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewAgent("second")
	if err != nil {
		t.Fatal(err)
	}
	if a.InstanceID() == b.InstanceID() {
		t.Fatalf("two agents share the default instance id %q: they would replace each other's sessions", a.InstanceID())
	}
	if !strings.HasPrefix(a.InstanceID(), "first-") || !strings.HasPrefix(b.InstanceID(), "second-") {
		t.Fatalf("default instance ids %q and %q are not named after their agents", a.InstanceID(), b.InstanceID())
	}
}

func TestRunTakesItsTargetAndTokenFromTheEnvironment(t *testing.T) {
	address, plane := startTokenPlane(t, "s3cret")
	t.Setenv(envTarget, address)
	t.Setenv(envToken, " s3cret\n")
	agent, err := NewAgent("env-agent", WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, "") }()
	select {
	case got := <-plane.seen:
		if got != "s3cret" {
			t.Fatalf("the plane saw token %q", got)
		}
	case err := <-done:
		t.Fatalf("Run returned %v before reaching the plane named by %s", err, envTarget)
	case <-time.After(waitFor):
		t.Fatalf("no stream reached the plane named by %s", envTarget)
	}
	cancel()
	<-done
}

func TestARefusedTokenEndsRunWithAnErrorMatchingErrUnauthenticated(t *testing.T) {
	address, _ := startTokenPlane(t, "right")
	agent, err := NewAgent("refused", WithToken("wrong"), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	err = agent.Run(ctx, address)
	if !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Run returned %T %v; want an error matching ErrUnauthenticated", err, err)
	}
	var rpcErr *RPCError
	if !errors.As(err, &rpcErr) || rpcErr.Code != codes.Unauthenticated {
		t.Fatalf("Run returned %T %v; want an *RPCError", err, err)
	}
}

package meshplane

// A replaced agent connection closes as soon as no call uses it: at once when idle, else when its
// last stream ends, without waiting for the grace (which only bounds calls that never end).

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// shutDown waits until conn is closed (its state Shutdown), failing the test after waitFor.
func shutDown(t *testing.T, conn *grpc.ClientConn, what string) {
	t.Helper()
	eventually(t, what, func() bool { return conn.GetState() == connectivity.Shutdown })
}

// newTestAgentConn is an agentConn to a fake plane served over an in-memory listener.
func newTestAgentConn(t *testing.T) (*agentConn, *fakePlane) {
	t.Helper()
	listener := bufconn.Listen(1 << 20)
	server := grpc.NewServer()
	plane := &fakePlane{sessions: make(chan *fakeSession, 8)}
	pb.RegisterAgentLinkServiceServer(server, plane)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	conn, err := newAgentConn(func() (*grpc.ClientConn, error) {
		return grpc.NewClient("passthrough:///bufnet",
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return listener.DialContext(ctx) }))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, plane
}

func TestAnIdleReplacedConnectionClosesAtOnce(t *testing.T) {
	conn, _ := newTestAgentConn(t)
	old := conn.conn()
	if err := conn.reconnect(); err != nil {
		t.Fatal(err)
	}
	shutDown(t, old, "the idle replaced connection closed")
	if conn.conn().GetState() == connectivity.Shutdown {
		t.Fatal("the new connection is closed")
	}
}

func TestAReplacedConnectionClosesWhenItsLastStreamEnds(t *testing.T) {
	conn, plane := newTestAgentConn(t)
	old := conn.conn()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := pb.NewAgentLinkServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.ConnectRequest{Frame: &pb.ConnectRequest_Register{Register: &pb.Register{}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-plane.sessions:
	case <-time.After(waitFor):
		t.Fatal("the stream did not reach the plane")
	}

	if err := conn.reconnect(); err != nil {
		t.Fatal(err)
	}
	if old.GetState() == connectivity.Shutdown {
		t.Fatal("the replaced connection closed under a stream still using it")
	}
	cancel() // how the agent abandons a session's stream
	shutDown(t, old, "the replaced connection closed after its last stream ended")
}

// An agent whose registration failed moves to a new connection; the old one, which its ended
// session no longer uses, closes at once.
func TestTheConnectionLeftAfterAFailedRegistrationCloses(t *testing.T) {
	h, run := startAgent(t)
	run(h.agent)
	s := h.session()
	h.agent.mu.Lock()
	old := h.agent.rt.conn.conn()
	h.agent.mu.Unlock()

	s.end <- status.Error(codes.Unavailable, "the database connection was lost; retry") // before `registered`
	h.session().registered()
	h.wantDials(2, "after a failed registration")
	shutDown(t, old, "the connection of the failed registration closed")
}

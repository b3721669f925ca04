package meshplane

// Which connection the next session goes over: a new one after a session that failed before
// registration (behind a load balancer, a new connection may reach another replica), the same one
// after a session that registered; and, of several addresses, the next one (round_robin).

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

func (h *harness) wantDials(want int32, when string) {
	h.t.Helper()
	if got := h.dials.Load(); got != want {
		h.t.Fatalf("%s: %d connection(s) opened, want %d", when, got, want)
	}
}

func TestAFailedRegistrationIsRetriedOverANewConnection(t *testing.T) {
	h, run := startAgent(t)
	run(h.agent)
	noDatabase := status.Error(codes.Unavailable, "the database connection was lost; retry")

	h.session().end <- noDatabase // before `registered`
	s := h.session()
	h.wantDials(2, "after a failed registration")
	s.registered()

	s.end <- nil // a registered session ends (a drain, a plane restart): the same connection
	s = h.session()
	h.wantDials(2, "after a registered session ended")
	s.registered()
	s.end <- status.Error(codes.Unavailable, "stream broken") // and when it breaks
	s = h.session()
	h.wantDials(2, "after a registered session broke")

	s.end <- noDatabase
	s = h.session()
	h.wantDials(3, "after another failed registration")
	// A new connection that failed too is kept once: of several addresses, round_robin takes the
	// next one on it (a new connection could land on the failing one again).
	s.end <- noDatabase
	s = h.session()
	h.wantDials(3, "after a new connection failed")
	s.end <- noDatabase
	s = h.session()
	h.wantDials(4, "after the kept connection failed")
	s.registered()
	select {
	case <-h.agent.Ready():
	case <-time.After(waitFor):
		t.Fatal("Ready not closed")
	}
}

// refusingPlane ends every stream before `registered`, as a replica without its database does.
type refusingPlane struct {
	pb.UnimplementedAgentLinkServiceServer
	streams atomic.Int32
}

func (p *refusingPlane) Connect(stream grpc.BidiStreamingServer[pb.ConnectRequest, pb.ConnectResponse]) error {
	p.streams.Add(1)
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return status.Error(codes.Unavailable, "the database connection was lost; retry")
}

func serveTCP(t *testing.T, plane pb.AgentLinkServiceServer) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	pb.RegisterAgentLinkServiceServer(server, plane)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return listener.Addr().String()
}

func TestOfSeveralAddressesTheAgentMovesOnFromOneThatCannotRegisterIt(t *testing.T) {
	for round := range 5 { // each agent's first stream may go to either address
		broken := &refusingPlane{}
		healthy := &fakePlane{sessions: make(chan *fakeSession, 8)}
		target := "ipv4:" + serveTCP(t, broken) + "," + serveTCP(t, healthy) // the broken one first
		agent, err := NewAgent("tester", WithInstanceID("test-1"), WithLogger(discardLogger()),
			WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- agent.Run(ctx, target) }()
		h := &harness{t: t, plane: healthy, agent: agent}
		h.session().registered()
		select {
		case <-agent.Ready():
		case <-time.After(waitFor):
			t.Fatal("Ready not closed")
		}
		t.Logf("round %d: %d stream(s) to the broken plane", round, broken.streams.Load())
		// At most: the first stream, then the one on the new connection (which may land on it again).
		if n := broken.streams.Load(); n > 2 {
			t.Errorf("round %d: %d streams to the replica that cannot register the agent, want at most 2", round, n)
		}
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
		}
	}
}

func TestIPTargets(t *testing.T) {
	good := []struct {
		scheme, list string
		want         []string
	}{
		{"ipv4", "127.0.0.1:5001,127.0.0.1:5002", []string{"127.0.0.1:5001", "127.0.0.1:5002"}},
		{"ipv4", "10.0.0.1", []string{"10.0.0.1:443"}},
		{"ipv6", "[::1]:5001,[::2]:5002", []string{"[::1]:5001", "[::2]:5002"}},
		{"ipv6", "::1", []string{"[::1]:443"}},
	}
	for _, c := range good {
		got, err := parseIPTarget(c.scheme, c.list)
		if err != nil || strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%s:%s: %v %v, want %v", c.scheme, c.list, got, err, c.want)
		}
	}
	bad := []struct{ scheme, list string }{
		{"ipv4", ""}, {"ipv4", "example.com:5001"}, {"ipv4", "[::1]:5001"}, {"ipv4", "127.0.0.1:http"},
		{"ipv4", "127.0.0.1:5001,"}, {"ipv6", "127.0.0.1"}, {"ipv6", "[::1]:99999"},
	}
	for _, c := range bad {
		if got, err := parseIPTarget(c.scheme, c.list); err == nil {
			t.Errorf("%s:%s: %v, want an error", c.scheme, c.list, got)
		}
	}
	if err := checkTarget("ipv4:127.0.0.1:1,nope"); err == nil {
		t.Error("checkTarget accepted a bad ipv4 list")
	}
	for _, target := range []string{"127.0.0.1:1", "dns:///plane:50051", "passthrough:///bufnet", "ipv4:///127.0.0.1:1"} {
		if err := checkTarget(target); err != nil {
			t.Errorf("checkTarget(%q): %v", target, err)
		}
	}
	var target resolver.Target
	target.URL.Scheme, target.URL.Opaque = "ipv4", "127.0.0.1:5001,127.0.0.1:5002"
	if got := (ipResolverBuilder{scheme: "ipv4"}).OverrideAuthority(target); got != "127.0.0.1:5001" {
		t.Errorf("authority %q, want the first address", got)
	}
}

func TestAnAgentWithABadIPTargetFailsAtOnce(t *testing.T) {
	agent, err := NewAgent("tester", WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Run(context.Background(), "ipv4:plane.example:50051"); err == nil || !strings.Contains(err.Error(), "not an IPv4 address") {
		t.Fatalf("Run: %v", err)
	}
}

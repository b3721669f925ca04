package server

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// dialIngress serves the gateway's gRPC ingress for upstream addr on a
// loopback port 0 and returns a client connection to it.
func dialIngress(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	gw, err := New(testConfig(t, addr, "--grpc-listen", "127.0.0.1:0"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gw.GRPC().Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		gw.GRPC().Stop()
		gw.Close()
	})
	return conn
}

func TestIngressForwardsUnaryCallsWithMetadataAndStatus(t *testing.T) {
	up := startUpstream(t)
	tasks := meshplanev1.NewTaskServiceClient(dialIngress(t, up.addr))
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer s3cret", "x-correlation-id", "c-7")

	got, err := tasks.GetTask(ctx, &meshplanev1.GetTaskRequest{TaskId: "t-9"})
	if err != nil || got.GetTask().GetId() != "t-9" {
		t.Fatalf("GetTask through the ingress: %v, %v", got, err)
	}
	md := up.metadata("/meshplane.v1.TaskService/GetTask")
	if !slices.Equal(md.Get("authorization"), []string{"Bearer s3cret"}) || !slices.Equal(md.Get("x-correlation-id"), []string{"c-7"}) {
		t.Errorf("upstream metadata %v lacks the caller's", md)
	}

	_, err = tasks.GetTask(ctx, &meshplanev1.GetTaskRequest{TaskId: "missing"})
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "task missing not found" {
		t.Errorf("GetTask(missing) through the ingress: %v", err)
	}
}

func TestIngressKeepsErrorDetails(t *testing.T) {
	up := startUpstream(t)
	state := meshplanev1.NewStateServiceClient(dialIngress(t, up.addr))
	stale := int64(7)
	_, err := state.PutState(t.Context(), &meshplanev1.PutStateRequest{Namespace: "n", Key: "k", ExpectedVersion: &stale})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || len(st.Details()) != 1 {
		t.Fatalf("PutState with a stale version: %v (details %v)", err, st.Details())
	}
	if v := st.Details()[0].(*errdetails.PreconditionFailure).GetViolations()[0]; v.GetSubject() != "n/k" {
		t.Errorf("violation %v", v)
	}
}

func TestIngressForwardsSubmitsAndServerStreams(t *testing.T) {
	up := startUpstream(t)
	conn := dialIngress(t, up.addr)
	tasks := meshplanev1.NewTaskServiceClient(conn)

	submitted, err := tasks.SubmitTask(t.Context(), &meshplanev1.SubmitTaskRequest{Target: &meshplanev1.TaskTarget{Capability: "echo"}})
	if err != nil || submitted.GetTask().GetTarget().GetCapability() != "echo" {
		t.Fatalf("SubmitTask through the ingress: %v, %v", submitted, err)
	}
	_, err = tasks.SubmitTask(t.Context(), &meshplanev1.SubmitTaskRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("an invalid submit through the ingress: %v", err)
	}

	up.watch <- event(1, meshplanev1.TaskState_TASK_STATE_QUEUED)
	stream, err := tasks.WatchTask(t.Context(), &meshplanev1.WatchTaskRequest{TaskId: "scripted"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetEvent().GetSequence() != 1 {
		t.Fatalf("first event %v, %v", first, err)
	}
	up.watch <- event(2, meshplanev1.TaskState_TASK_STATE_RUNNING)
	up.watch <- watchStep{err: status.Error(codes.Aborted, "plane restarting")}
	second, err := stream.Recv()
	if err != nil || second.GetEvent().GetSequence() != 2 {
		t.Fatalf("second event %v, %v", second, err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Aborted {
		t.Errorf("the stream ended with %v, want the upstream's ABORTED", err)
	}

	health, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || health.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health through the ingress: %v, %v", health, err)
	}
}

func TestIngressEndsTheUpstreamCallWhenTheCallerLeaves(t *testing.T) {
	up := startUpstream(t)
	tasks := meshplanev1.NewTaskServiceClient(dialIngress(t, up.addr))
	ctx, cancel := context.WithCancel(t.Context())
	up.watch <- event(1, meshplanev1.TaskState_TASK_STATE_QUEUED)
	stream, err := tasks.WatchTask(ctx, &meshplanev1.WatchTaskRequest{TaskId: "scripted"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	waitFor(t, "the upstream stream to end", func() bool { return up.streamsEnded.Load() == 1 })
}

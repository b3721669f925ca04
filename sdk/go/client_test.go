package meshplane

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// peerRecorder answers GetTask, counting the calls by the client connection they came over.
type peerRecorder struct {
	pb.UnimplementedTaskServiceServer
	mu    sync.Mutex
	calls map[string]int
}

func (r *peerRecorder) GetTask(ctx context.Context, req *pb.GetTaskRequest) (*pb.GetTaskResponse, error) {
	if p, ok := peer.FromContext(ctx); ok {
		r.mu.Lock()
		r.calls[p.Addr.String()]++
		r.mu.Unlock()
	}
	return &pb.GetTaskResponse{Task: &pb.Task{Id: req.GetTaskId(), State: pb.TaskState_TASK_STATE_QUEUED}}, nil
}

func (r *peerRecorder) callsByConnection() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var counts []int
	for _, n := range r.calls {
		counts = append(counts, n)
	}
	slices.Sort(counts)
	return counts
}

func startRecorder(t *testing.T, serverOpts ...grpc.ServerOption) (string, *peerRecorder) {
	t.Helper()
	rec := &peerRecorder{calls: map[string]int{}}
	srv := grpc.NewServer(serverOpts...)
	pb.RegisterTaskServiceServer(srv, rec)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), rec
}

// Calls take the client's connections in turn (the plane accepts one connection's calls one at a time).
func TestClientCallsTakeTheConnectionsInTurn(t *testing.T) {
	for _, tc := range []struct {
		opts []ClientOption
		want []int
	}{
		{nil, []int{9}},
		{[]ClientOption{WithConnections(3)}, []int{3, 3, 3}},
	} {
		t.Run(fmt.Sprint(tc.want), func(t *testing.T) {
			addr, rec := startRecorder(t)
			client, err := NewClient(addr, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			for i := range 9 {
				id := fmt.Sprintf("t-%d", i)
				task, err := client.Get(context.Background(), id)
				if err != nil || task.ID != id {
					t.Fatalf("Get(%s) = %+v, %v", id, task, err)
				}
			}
			if got := rec.callsByConnection(); !slices.Equal(got, tc.want) {
				t.Errorf("calls by connection %v, want %v", got, tc.want)
			}
		})
	}
}

func TestClientRefusesAConnectionCountOutOfRange(t *testing.T) {
	for _, n := range []int{0, 65} {
		_, err := NewClient("127.0.0.1:1", WithConnections(n))
		if err == nil || !strings.Contains(err.Error(), "connections must be between 1 and 64") {
			t.Errorf("WithConnections(%d): error %v", n, err)
		}
	}
}

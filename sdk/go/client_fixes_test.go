package meshplane

// Client behaviour around plane restarts, failed subscriptions, the MESHPLANE_TARGET and
// MESHPLANE_TOKEN environment variables and client-side argument checks, against in-process
// fakes of the control plane (helpers: client_api_test.go).

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

func endedTask(id string, state pb.TaskState) *pb.Task {
	t := &pb.Task{Id: id, State: state, Target: &pb.TaskTarget{Capability: "greet"}}
	if state == pb.TaskState_TASK_STATE_SUCCEEDED {
		t.Output = jsonPayload([]byte(`{"greeting":"hello Ada"}`))
	}
	return t
}

// endingTasks: a task that has just ended. WatchTask sends its terminal event; GetTask answers
// with getErrs in turn (nil: the record), then the record.
type endingTasks struct {
	pb.UnimplementedTaskServiceServer
	state   pb.TaskState
	mu      sync.Mutex
	getErrs []error
	gets    atomic.Int32
}

func (f *endingTasks) SubmitTask(_ context.Context, req *pb.SubmitTaskRequest) (*pb.SubmitTaskResponse, error) {
	return &pb.SubmitTaskResponse{Task: &pb.Task{Id: "t-1", Target: req.GetTarget(), State: pb.TaskState_TASK_STATE_QUEUED}}, nil
}

func (f *endingTasks) WatchTask(req *pb.WatchTaskRequest, stream grpc.ServerStreamingServer[pb.WatchTaskResponse]) error {
	return stream.Send(&pb.WatchTaskResponse{Event: &pb.TaskEvent{
		TaskId: req.GetTaskId(), Sequence: 3, State: f.state,
		Type: pb.TaskEventType_TASK_EVENT_TYPE_SUCCEEDED,
	}})
}

func (f *endingTasks) GetTask(_ context.Context, req *pb.GetTaskRequest) (*pb.GetTaskResponse, error) {
	f.gets.Add(1)
	f.mu.Lock()
	var err error
	if len(f.getErrs) > 0 {
		err, f.getErrs = f.getErrs[0], f.getErrs[1:]
	}
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &pb.GetTaskResponse{Task: endedTask(req.GetTaskId(), f.state)}, nil
}

// restartingTasks is the plane before a graceful restart: the task ends (WatchTask sends its
// terminal event), then the plane goes down while Wait reads the final record.
type restartingTasks struct {
	endingTasks
	restart chan struct{} // closed at the first GetTask
	once    sync.Once
}

func (f *restartingTasks) GetTask(ctx context.Context, _ *pb.GetTaskRequest) (*pb.GetTaskResponse, error) {
	f.once.Do(func() { close(f.restart) })
	<-ctx.Done() // the server stops under this call
	return nil, status.Error(codes.Unavailable, "shutting down")
}

// The reported bug: the task SUCCEEDED, the plane restarted gracefully right then, and Wait (and
// Run) failed with Unavailable instead of returning the succeeded task once the plane was back.
func TestWaitRidesOutAPlaneRestartRightAfterTheTaskEnded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	before := &restartingTasks{endingTasks: endingTasks{state: pb.TaskState_TASK_STATE_SUCCEEDED}, restart: make(chan struct{})}
	after := &endingTasks{state: pb.TaskState_TASK_STATE_SUCCEEDED}
	srv := grpc.NewServer()
	pb.RegisterTaskServiceServer(srv, before)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	restarted := make(chan *grpc.Server, 1)
	go func() {
		<-before.restart
		srv.Stop()
		time.Sleep(300 * time.Millisecond) // down for a while: Wait's reads fail meanwhile
		ln2, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("restart on %s: %v", addr, err)
			restarted <- nil
			return
		}
		srv2 := grpc.NewServer()
		pb.RegisterTaskServiceServer(srv2, after)
		go func() { _ = srv2.Serve(ln2) }()
		restarted <- srv2
	}()
	t.Cleanup(func() {
		select {
		case s := <-restarted:
			if s != nil {
				s.Stop()
			}
		case <-time.After(waitFor):
		}
	})

	client, err := NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	task, err := client.Run(testContext(t), "greet", map[string]string{"Name": "Ada"})
	if err != nil {
		t.Fatalf("Run = %v; want the succeeded task once the plane is back", err)
	}
	var out map[string]string
	if task.State != TaskSucceeded || task.Decode(&out) != nil || out["greeting"] != "hello Ada" {
		t.Errorf("Run = %+v, want the SUCCEEDED task and its output", task)
	}
	if after.gets.Load() == 0 {
		t.Error("the final record was not read from the restarted plane")
	}
}

func TestWaitRetriesTheFinalReadWhileThePlaneIsUnavailable(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "restarting")
	tasks := &endingTasks{state: pb.TaskState_TASK_STATE_FAILED, getErrs: []error{unavailable, unavailable, unavailable}}
	client := startFakeServices(t, func(srv *grpc.Server) { pb.RegisterTaskServiceServer(srv, tasks) })

	task, err := client.Wait(testContext(t), "t-1")
	if !errors.Is(err, ErrTaskFailed) || task == nil || task.State != TaskFailed {
		t.Errorf("Wait = %+v, %v; want the FAILED task and a *TaskFailedError", task, err)
	}
	if n := tasks.gets.Load(); n != 4 {
		t.Errorf("%d GetTask calls, want 4 (three unavailable, then the record)", n)
	}
}

// As in the Python SDK: when the caller's deadline leaves no room for another try, the last
// Unavailable is returned (not the deadline's error, and not after the deadline).
func TestWaitReturnsUnavailableWhenItsDeadlineLeavesNoRoomForAnotherTry(t *testing.T) {
	tasks := &endingTasks{state: pb.TaskState_TASK_STATE_SUCCEEDED}
	for range 1000 {
		tasks.getErrs = append(tasks.getErrs, status.Error(codes.Unavailable, "down"))
	}
	client := startFakeServices(t, func(srv *grpc.Server) { pb.RegisterTaskServiceServer(srv, tasks) })

	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	task, err := client.Wait(ctx, "t-1")
	if task != nil || !errors.Is(err, ErrUnavailable) {
		t.Errorf("Wait = %+v, %v; want an error matching ErrUnavailable", task, err)
	}
	if ctx.Err() != nil {
		t.Error("Wait returned after its deadline")
	}
	if n := tasks.gets.Load(); n < 3 {
		t.Errorf("%d GetTask calls before giving up, want several", n)
	}
}

func TestWaitStopsRetryingTheFinalReadWhenItsContextIsCancelled(t *testing.T) {
	tasks := &endingTasks{state: pb.TaskState_TASK_STATE_SUCCEEDED}
	for range 1000 {
		tasks.getErrs = append(tasks.getErrs, status.Error(codes.Unavailable, "down"))
	}
	client := startFakeServices(t, func(srv *grpc.Server) { pb.RegisterTaskServiceServer(srv, tasks) })

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for tasks.gets.Load() < 2 {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	done := make(chan error, 1)
	go func() {
		_, err := client.Wait(ctx, "t-1") // no deadline: retries until cancelled
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
	case <-time.After(waitFor):
		cancel()
		t.Fatal("Wait did not return once its context was cancelled")
	}
}

func TestWaitDoesNotRetryOtherErrorsOfTheFinalRead(t *testing.T) {
	tasks := &endingTasks{state: pb.TaskState_TASK_STATE_SUCCEEDED, getErrs: []error{status.Error(codes.NotFound, "gone")}}
	client := startFakeServices(t, func(srv *grpc.Server) { pb.RegisterTaskServiceServer(srv, tasks) })
	if _, err := client.Wait(testContext(t), "t-1"); !errors.Is(err, ErrNotFound) || tasks.gets.Load() != 1 {
		t.Errorf("Wait = %v after %d GetTask calls; want ErrNotFound after one", err, tasks.gets.Load())
	}
}

// subscribeChannels: Subscribe fails with err, or goes live and sends one message, then waits.
type subscribeChannels struct {
	pb.UnimplementedChannelServiceServer
	err   error
	calls atomic.Int32
}

func (f *subscribeChannels) Subscribe(req *pb.SubscribeRequest, stream grpc.ServerStreamingServer[pb.SubscribeResponse]) error {
	f.calls.Add(1)
	if f.err != nil {
		return f.err
	}
	if err := stream.Send(&pb.SubscribeResponse{Event: &pb.SubscribeResponse_Started{Started: &pb.SubscriptionStarted{}}}); err != nil {
		return err
	}
	msg := &pb.ChannelMessage{Channel: req.GetChannel(), Payload: jsonPayload([]byte(`"hi"`))}
	if err := stream.Send(&pb.SubscribeResponse{Event: &pb.SubscribeResponse_Message{Message: msg}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// subscribeInBackground runs Subscribe as the README suggests: in a goroutine, waiting on ready.
// It fails the test if <-ready blocks, and returns Subscribe's error.
func subscribeInBackground(t *testing.T, client *Client, channel string) error {
	t.Helper()
	ready, errc := make(chan struct{}), make(chan error, 1)
	go func() { errc <- client.Subscribe(testContext(t), channel, ready, func(*Message) error { return nil }) }()
	select {
	case <-ready:
	case <-time.After(waitFor):
		t.Fatal("<-ready blocked although the subscription failed")
	}
	select {
	case err := <-errc:
		return err
	case <-time.After(waitFor):
		t.Fatal("Subscribe did not return")
		return nil
	}
}

func TestAFailedSubscriptionClosesReady(t *testing.T) {
	t.Run("bad channel name", func(t *testing.T) {
		// Refused as the plane refuses it; the SDK now checks it first, without a call.
		channels := &subscribeChannels{err: status.Error(codes.InvalidArgument, "channel: invalid channel name")}
		client := startFakeServices(t, func(srv *grpc.Server) { pb.RegisterChannelServiceServer(srv, channels) })
		err := subscribeInBackground(t, client, "orders..eu")
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "invalid channel name") {
			t.Errorf("Subscribe = %v, want an invalid channel name matching ErrInvalidArgument", err)
		}
		if n := channels.calls.Load(); n != 0 {
			t.Errorf("%d Subscribe calls reached the plane, want none", n)
		}
	})
	t.Run("refused by the plane", func(t *testing.T) {
		channels := &subscribeChannels{err: status.Error(codes.PermissionDenied, "not yours")}
		client := startFakeServices(t, func(srv *grpc.Server) { pb.RegisterChannelServiceServer(srv, channels) })
		if err := subscribeInBackground(t, client, "orders"); !errors.Is(err, ErrPermissionDenied) {
			t.Errorf("Subscribe = %v, want ErrPermissionDenied", err)
		}
	})
	t.Run("plane down", func(t *testing.T) {
		addr := closedAddress(t)
		client, err := NewClient(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		if err := subscribeInBackground(t, client, "orders"); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Subscribe = %v, want ErrUnavailable", err)
		}
	})
}

func TestALiveSubscriptionClosesReadyOnceAndDeliversMessages(t *testing.T) {
	client := startFakeServices(t, func(srv *grpc.Server) { pb.RegisterChannelServiceServer(srv, &subscribeChannels{}) })
	ctx, cancel := context.WithCancel(testContext(t))
	ready, errc, got := make(chan struct{}), make(chan error, 1), make(chan string, 1)
	go func() {
		errc <- client.Subscribe(ctx, "orders", ready, func(m *Message) error {
			var s string
			_ = m.Decode(&s)
			got <- s
			return nil
		})
	}()
	<-ready
	select {
	case s := <-got:
		if s != "hi" {
			t.Errorf("message %q, want \"hi\"", s)
		}
	case <-time.After(waitFor):
		t.Fatal("no message delivered")
	}
	cancel() // Subscribe returns without closing ready a second time (that would panic)
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Subscribe = %v, want context.Canceled", err)
	}
}

// authTasks answers GetTask, recording the authorization header of each call.
type authTasks struct {
	pb.UnimplementedTaskServiceServer
	mu   sync.Mutex
	auth []string
}

func (f *authTasks) GetTask(ctx context.Context, req *pb.GetTaskRequest) (*pb.GetTaskResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.auth = append(f.auth, strings.Join(md.Get("authorization"), ","))
	f.mu.Unlock()
	return &pb.GetTaskResponse{Task: endedTask(req.GetTaskId(), pb.TaskState_TASK_STATE_QUEUED)}, nil
}

func (f *authTasks) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.auth[len(f.auth)-1]
}

func startAuthTasks(t *testing.T) (string, *authTasks) {
	t.Helper()
	tasks := &authTasks{}
	srv := grpc.NewServer()
	pb.RegisterTaskServiceServer(srv, tasks)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), tasks
}

// The reported bug: NewClient("") then every call failed with `invalid target address ""`.
func TestNewClientTakesItsTargetAndTokenFromTheEnvironment(t *testing.T) {
	addr, tasks := startAuthTasks(t)
	t.Setenv("MESHPLANE_TARGET", addr)
	t.Setenv("MESHPLANE_TOKEN", " s3cret\n") // a token file's newline, say

	for _, tc := range []struct {
		name string
		opts []ClientOption
		want string
	}{
		{"no WithToken: MESHPLANE_TOKEN, trimmed", nil, "Bearer s3cret"},
		{"WithToken wins", []ClientOption{WithToken("mine ")}, "Bearer mine"},
		{`WithToken(""): no token`, []ClientOption{WithToken("")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := NewClient("", tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if _, err := client.Get(testContext(t), "t-1"); err != nil {
				t.Fatalf("Get through MESHPLANE_TARGET: %v", err)
			}
			if got := tasks.last(); got != tc.want {
				t.Errorf("authorization %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewClientRefusesATokenAHeaderCannotCarry(t *testing.T) {
	t.Setenv("MESHPLANE_TOKEN", "abc\ndef")
	if _, err := NewClient("127.0.0.1:1"); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "MESHPLANE_TOKEN") {
		t.Errorf("NewClient = %v, want an error naming MESHPLANE_TOKEN, matching ErrInvalidArgument", err)
	}
	if _, err := NewClient("127.0.0.1:1", WithToken("é")); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("NewClient = %v, want an error matching ErrInvalidArgument", err)
	}
}

type countingChannels struct {
	pb.UnimplementedChannelServiceServer
	publishes atomic.Int32
}

func (f *countingChannels) Publish(context.Context, *pb.PublishRequest) (*pb.PublishResponse, error) {
	f.publishes.Add(1)
	return &pb.PublishResponse{}, nil
}

// Arguments the SDK refuses before sending anything match ErrInvalidArgument, as the plane's own
// INVALID_ARGUMENT answers do, and keep their message.
func TestClientSideArgumentErrorsMatchErrInvalidArgument(t *testing.T) {
	tasks, channels := &fakeTasks{}, &countingChannels{}
	client := startFakeServices(t, func(srv *grpc.Server) {
		pb.RegisterTaskServiceServer(srv, tasks)
		pb.RegisterChannelServiceServer(srv, channels)
	})
	ctx := testContext(t)
	_, submitErr := client.Submit(ctx, "greet", func() {})
	_, batchErr := client.SubmitMany(ctx, []TaskRequest{NewTaskRequest("greet", 1), NewTaskRequest("greet", make(chan int))})
	_, connErr := NewClient("127.0.0.1:1", WithConnections(0))
	for _, c := range []struct {
		what   string
		err    error
		prefix string
	}{
		{"Publish to a bad channel", client.Publish(ctx, ".orders", 1), "meshplane: invalid channel name"},
		{"Publish of a value that does not encode", client.Publish(ctx, "orders", func() {}), "meshplane: value is not JSON-encodable"},
		{"Publish of invalid raw JSON", client.Publish(ctx, "orders", json.RawMessage("{")), "meshplane: json.RawMessage is not valid JSON"},
		{"Submit of an input that does not encode", submitErr, "meshplane: value is not JSON-encodable"},
		{"SubmitMany of an input that does not encode", batchErr, "meshplane: value is not JSON-encodable"},
		{"NewClient with 0 connections", connErr, "meshplane: connections must be between 1 and 64"},
	} {
		if !errors.Is(c.err, ErrInvalidArgument) || !strings.HasPrefix(c.err.Error(), c.prefix) {
			t.Errorf("%s: %v; want %q... matching ErrInvalidArgument", c.what, c.err, c.prefix)
		}
	}
	var unsupported *json.UnsupportedTypeError
	if !errors.As(submitErr, &unsupported) {
		t.Errorf("Submit: %v no longer reaches its cause", submitErr)
	}
	if n, m := channels.publishes.Load(), len(tasks.submits.all())+len(tasks.batches.all()); n != 0 || m != 0 {
		t.Errorf("%d Publish and %d submit calls reached the plane, want none", n, m)
	}
}

// closedAddress is a local address nothing listens on any more.
func closedAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestATaskEventNamesWhoCausedIt(t *testing.T) {
	ev := taskEvent(&pb.TaskEvent{TaskId: "t", Sequence: 2, Type: pb.TaskEventType_TASK_EVENT_TYPE_CANCELLED, Actor: "client/token:ab12"})
	if ev.Actor != "client/token:ab12" {
		t.Fatalf("Actor = %q", ev.Actor)
	}
}

package meshplane

// The agent against a scripted, in-memory AgentLinkService (bufconn): each test plays the
// control plane's side frame by frame. The real control plane is exercised by the
// conformance suite (tests/conformance).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

const waitFor = 5 * time.Second

type fakePlane struct {
	pb.UnimplementedAgentLinkServiceServer
	sessions chan *fakeSession
}

type fakeSession struct {
	register *pb.Register
	peer     *peer.Peer                // who connected (TLS: its certificate)
	results  map[string]*pb.TaskResult // every result seen so far, by task id
	frames   chan *pb.ConnectRequest   // closed when the agent half-closes or the stream breaks
	out      chan *pb.ConnectResponse
	end      chan error
}

func (f *fakePlane) Connect(stream grpc.BidiStreamingServer[pb.ConnectRequest, pb.ConnectResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	p, _ := peer.FromContext(stream.Context())
	s := &fakeSession{
		register: first.GetRegister(),
		peer:     p,
		results:  map[string]*pb.TaskResult{},
		frames:   make(chan *pb.ConnectRequest, 1024),
		out:      make(chan *pb.ConnectResponse, 64),
		end:      make(chan error, 1),
	}
	halfClosed := make(chan struct{})
	go func() {
		defer close(s.frames)
		for {
			frame, err := stream.Recv()
			if err != nil {
				close(halfClosed)
				return
			}
			s.frames <- frame
		}
	}()
	f.sessions <- s
	for {
		select {
		case m := <-s.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case err := <-s.end:
			// Frames queued before the end go out first, as they would from a real plane:
			// select picks among ready cases at random, so without this an ack queued just
			// before the end could be dropped.
			for {
				select {
				case m := <-s.out:
					if sendErr := stream.Send(m); sendErr != nil {
						return sendErr
					}
					continue
				default:
				}
				return err
			}
		case <-halfClosed: // like the real plane: the agent closed its side, the session ends
			return nil
		case <-stream.Context().Done():
			return nil
		}
	}
}

type harness struct {
	t      *testing.T
	plane  *fakePlane
	agent  *Agent
	cancel context.CancelFunc
	done   chan error
	dials  *atomic.Int32 // connections the agent opened
}

func startAgent(t *testing.T, opts ...Option) (*harness, func(*Agent)) {
	t.Helper()
	listener := bufconn.Listen(1 << 20)
	server := grpc.NewServer()
	plane := &fakePlane{sessions: make(chan *fakeSession, 8)}
	pb.RegisterAgentLinkServiceServer(server, plane)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)

	dials := &atomic.Int32{}
	base := []Option{
		WithInstanceID("test-1"),
		WithLogger(discardLogger()),
		WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond),
		WithDrainTimeout(time.Second),
		WithDialOptions(
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				dials.Add(1)
				return listener.DialContext(ctx)
			}),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
		),
	}
	agent, err := NewAgent("tester", append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, plane: plane, agent: agent, done: make(chan error, 1), dials: dials}
	return h, func(a *Agent) {
		ctx, cancel := context.WithCancel(context.Background())
		h.cancel = cancel
		go func() { h.done <- a.Run(ctx, "passthrough:///bufnet") }()
		t.Cleanup(func() {
			cancel()
			select {
			case <-h.done:
			case <-time.After(10 * time.Second):
				t.Error("Run did not return")
			}
		})
	}
}

func (h *harness) session() *fakeSession {
	h.t.Helper()
	select {
	case s := <-h.plane.sessions:
		return s
	case <-time.After(waitFor):
		h.t.Fatal("the agent did not connect")
		return nil
	}
}

func (s *fakeSession) registered(kept ...*pb.TaskRef) {
	s.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_Registered{Registered: &pb.Registered{
		SessionId: "s", HeartbeatInterval: durationpb.New(50 * time.Millisecond), LeaseTimeout: durationpb.New(time.Second),
		KeptTasks: kept,
	}}}
}

func (s *fakeSession) assign(taskID, capability, input string) {
	s.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_Assignments{Assignments: &pb.Assignments{
		Assignments: []*pb.Assignment{{TaskId: taskID, Attempt: 1, Capability: capability, Input: jsonPayload([]byte(input))}},
	}}}
}

func (s *fakeSession) ack(taskIDs ...string) {
	refs := make([]*pb.TaskRef, len(taskIDs))
	for i, id := range taskIDs {
		refs[i] = &pb.TaskRef{TaskId: id, Attempt: 1}
	}
	s.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_ResultAcks{ResultAcks: &pb.ResultAcks{Tasks: refs}}}
}

// result waits for the result of taskID (skipping other frames).
func (s *fakeSession) result(t *testing.T, taskID string) *pb.TaskResult {
	t.Helper()
	if r, ok := s.results[taskID]; ok {
		return r
	}
	s.waitFrame(t, "result of "+taskID, func(*pb.ConnectRequest) bool { return s.results[taskID] != nil })
	return s.results[taskID]
}

func (s *fakeSession) waitFrame(t *testing.T, what string, match func(*pb.ConnectRequest) bool) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				t.Fatalf("the stream ended while waiting for %s", what)
			}
			for _, r := range f.GetTaskResults().GetResults() {
				s.results[r.GetTaskId()] = r
			}
			if match(f) {
				return
			}
		case <-timeout:
			t.Fatalf("no %s within %v", what, waitFor)
		}
	}
}

// closedByAgent waits until the agent half-closes the stream.
func (s *fakeSession) closedByAgent(t *testing.T) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case _, ok := <-s.frames:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("the agent did not close the stream")
		}
	}
}

func TestAgentRegistersServesAndMapsErrors(t *testing.T) {
	h, run := startAgent(t, WithLabels(map[string]string{"lang": "go"}), WithMaxConcurrency(3), WithVersion("1.2.3"))
	h.agent.Handle("echo", func(_ context.Context, t *Task) (any, error) { return t.Input, nil })
	h.agent.Handle("boom", func(context.Context, *Task) (any, error) { panic("kaboom") })
	h.agent.Handle("fatal", func(context.Context, *Task) (any, error) { return nil, NonRetryable("Fatal", "fatal") })
	h.agent.OnChannel("news", func(context.Context, *Message) error { return nil })
	run(h.agent)

	s := h.session()
	reg := s.register
	if reg.GetAgentName() != "tester" || reg.GetInstanceId() != "test-1" || reg.GetMaxConcurrency() != 3 ||
		reg.GetSdk().GetLanguage() != "go" || reg.GetAgentVersion() != "1.2.3" || reg.GetLabels()["lang"] != "go" ||
		len(reg.GetCapabilities()) != 3 || len(reg.GetSubscriptions()) != 1 || reg.GetWeight() != 1 {
		t.Fatalf("register: %v", reg)
	}
	s.registered()
	select {
	case <-h.agent.Ready():
	case <-time.After(waitFor):
		t.Fatal("Ready not closed")
	}

	s.assign("t1", "echo", `{"a":[1,2]}`)
	if r := s.result(t, "t1"); string(r.GetOutput().GetData()) != `{"a":[1,2]}` {
		t.Fatalf("echo: %v", r)
	}
	s.assign("t2", "boom", `{}`)
	if e := s.result(t, "t2").GetError(); e.GetCode() != CodePanic || !e.GetRetryable() || e.GetMessage() != "kaboom" {
		t.Fatalf("panic: %v", e)
	}
	s.assign("t3", "fatal", `{}`)
	if e := s.result(t, "t3").GetError(); e.GetCode() != "Fatal" || e.GetRetryable() {
		t.Fatalf("fatal: %v", e)
	}
	s.assign("t4", "nope", `{}`)
	if e := s.result(t, "t4").GetError(); e.GetCode() != CodeUnknownCapability || e.GetRetryable() {
		t.Fatalf("unknown capability: %v", e)
	}
	s.waitFrame(t, "a heartbeat", func(f *pb.ConnectRequest) bool { return f.GetHeartbeat() != nil })
}

func TestAgentNeverRunsMoreThanMaxConcurrency(t *testing.T) {
	h, run := startAgent(t, WithMaxConcurrency(2))
	release := make(chan struct{})
	var current, peak atomic.Int32
	h.agent.Handle("hold", func(ctx context.Context, _ *Task) (any, error) {
		n := current.Add(1)
		defer current.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		return map[string]int{"n": int(n)}, nil
	})
	run(h.agent)
	s := h.session()
	s.registered()
	// A plane that over-assigns: the agent queues what exceeds its limit.
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		s.assign(id, "hold", `{}`)
	}
	time.Sleep(50 * time.Millisecond) // let the handlers pile up, if they would
	close(release)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if r := s.result(t, id); r.GetOutput() == nil {
			t.Fatalf("%s: %v", id, r)
		}
	}
	if peak.Load() != 2 {
		t.Fatalf("peak %d, want 2", peak.Load())
	}
}

func TestCancelledAttemptsAnswerCancelledOnce(t *testing.T) {
	h, run := startAgent(t)
	h.agent.Handle("wait", func(ctx context.Context, task *Task) (any, error) {
		<-ctx.Done()
		if !errors.Is(context.Cause(ctx), ErrAttemptCancelled) || task.CancelReason() != "cancelled" {
			return nil, errors.New("wrong cause")
		}
		return "ignored", nil
	})
	run(h.agent)
	s := h.session()
	s.registered()
	s.assign("t1", "wait", `{}`)
	s.assign("t1", "wait", `{}`) // a duplicate delivery is ignored
	s.waitFrame(t, "STARTED", func(f *pb.ConnectRequest) bool {
		u := f.GetTaskUpdates().GetUpdates()
		return len(u) > 0 && u[0].GetKind() == pb.TaskUpdateKind_TASK_UPDATE_KIND_STARTED
	})
	s.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_Cancellations{Cancellations: &pb.Cancellations{
		Cancellations: []*pb.Cancellation{{TaskId: "t1", Attempt: 1, Reason: "cancelled"}},
	}}}
	e := s.result(t, "t1").GetError()
	if e.GetCode() != CodeCancelled || e.GetRetryable() {
		t.Fatalf("got %v", e)
	}
	s.ack("t1")
	results := 0
	deadline := time.After(200 * time.Millisecond)
	for done := false; !done; {
		select {
		case f := <-s.frames:
			results += len(f.GetTaskResults().GetResults())
		case <-deadline:
			done = true
		}
	}
	if results != 0 {
		t.Fatalf("%d extra result(s) for one assignment", results)
	}
}

func TestTheClientsCancelMessageReachesTheHandler(t *testing.T) {
	h, run := startAgent(t)
	type seen struct{ reason, message, cause string }
	observed := make(chan seen, 2)
	h.agent.Handle("wait", func(ctx context.Context, task *Task) (any, error) {
		<-ctx.Done()
		observed <- seen{task.CancelReason(), task.CancelMessage(), context.Cause(ctx).Error()}
		return nil, ctx.Err()
	})
	run(h.agent)
	s := h.session()
	s.registered()
	s.assign("t1", "wait", `{}`)
	s.assign("t2", "wait", `{}`)
	s.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_Cancellations{Cancellations: &pb.Cancellations{
		Cancellations: []*pb.Cancellation{
			{TaskId: "t1", Attempt: 1, Reason: "cancelled", Message: "operator says stop"},
			{TaskId: "t2", Attempt: 1, Reason: "timed_out"},
		},
	}}}
	got := map[string]seen{}
	for range 2 {
		select {
		case o := <-observed:
			got[o.reason] = o
		case <-time.After(5 * time.Second):
			t.Fatal("the handlers did not see their cancellation")
		}
	}
	want := map[string]seen{
		"cancelled": {"cancelled", "operator says stop", "meshplane: task attempt cancelled (cancelled): operator says stop"},
		"timed_out": {"timed_out", "", "meshplane: task attempt cancelled (timed_out)"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, id := range []string{"t1", "t2"} {
		if e := s.result(t, id).GetError(); e.GetCode() != CodeCancelled {
			t.Fatalf("%s: got %v", id, e)
		}
	}
}

func TestReconnectHoldsRunningTasksAndResendsUnackedResults(t *testing.T) {
	h, run := startAgent(t)
	release := make(chan struct{})
	h.agent.Handle("hold", func(ctx context.Context, _ *Task) (any, error) {
		select {
		case <-release:
			return "held", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	h.agent.Handle("quick", func(context.Context, *Task) (any, error) { return "quick", nil })
	run(h.agent)

	s1 := h.session()
	s1.registered()
	s1.assign("running", "hold", `{}`)
	s1.assign("done", "quick", `{}`)
	s1.assign("stale", "quick", `{}`)
	s1.result(t, "done") // never acknowledged
	s1.result(t, "stale")
	s1.end <- status.Error(codes.Unavailable, "plane restarting")

	s2 := h.session()
	held := map[string]bool{}
	for _, ref := range s2.register.GetHeldTasks() {
		held[ref.GetTaskId()] = true
	}
	if len(held) != 3 || !held["running"] || !held["done"] || !held["stale"] {
		t.Fatalf("held_tasks: %v", s2.register.GetHeldTasks())
	}
	// The plane keeps two; "stale" moved on without this agent.
	s2.registered(&pb.TaskRef{TaskId: "running", Attempt: 1}, &pb.TaskRef{TaskId: "done", Attempt: 1})
	if r := s2.result(t, "done"); string(r.GetOutput().GetData()) != `"quick"` {
		t.Fatalf("resent: %v", r)
	}
	s2.ack("done")
	close(release)
	if r := s2.result(t, "running"); string(r.GetOutput().GetData()) != `"held"` {
		t.Fatalf("kept task: %v", r)
	}
	s2.ack("running")

	// Nothing is held any more: the next session registers with no held tasks.
	s2.end <- status.Error(codes.Unavailable, "again")
	if s3 := h.session(); len(s3.register.GetHeldTasks()) != 0 {
		t.Fatalf("held_tasks after acks: %v", s3.register.GetHeldTasks())
	}
}

func TestShutdownDrainsFinishesWorkAndWaitsForAcks(t *testing.T) {
	h, run := startAgent(t)
	release := make(chan struct{})
	h.agent.Handle("hold", func(context.Context, *Task) (any, error) {
		<-release
		return "finished", nil
	})
	run(h.agent)
	s := h.session()
	s.registered()
	s.assign("t1", "hold", `{}`)
	s.waitFrame(t, "STARTED", func(f *pb.ConnectRequest) bool { return f.GetTaskUpdates() != nil })

	h.cancel() // e.g. SIGTERM
	s.waitFrame(t, "draining", func(f *pb.ConnectRequest) bool { return f.GetDraining() != nil })
	close(release)
	if r := s.result(t, "t1"); string(r.GetOutput().GetData()) != `"finished"` {
		t.Fatalf("got %v", r)
	}
	select {
	case err := <-h.done:
		t.Fatalf("Run returned (%v) before the result was acknowledged", err)
	case <-time.After(100 * time.Millisecond):
	}
	s.ack("t1")
	s.closedByAgent(t)
	s.end <- nil
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		h.done <- nil // for the cleanup
	case <-time.After(waitFor):
		t.Fatal("Run did not return after the drain")
	}
}

func TestDrainTimeoutGivesUpRunningTasksAsAgentStopped(t *testing.T) {
	h, run := startAgent(t, WithDrainTimeout(200*time.Millisecond))
	causes := make(chan string, 1)
	h.agent.Handle("stuck", func(ctx context.Context, task *Task) (any, error) {
		<-ctx.Done()
		if !errors.Is(context.Cause(ctx), ErrAttemptCancelled) {
			causes <- "cause " + fmt.Sprint(context.Cause(ctx))
		} else {
			causes <- task.CancelReason()
		}
		return "too late", nil // dropped: the attempt was given up
	})
	run(h.agent)
	s := h.session()
	s.registered()
	s.assign("t1", "stuck", `{}`)
	s.waitFrame(t, "STARTED", func(f *pb.ConnectRequest) bool { return f.GetTaskUpdates() != nil })

	h.cancel() // e.g. SIGTERM; the handler outlives the drain timeout
	stopped := func(taskID string) {
		t.Helper()
		r := s.result(t, taskID) // fails if the stream ends first
		e := r.GetError()
		want := "agent instance 'test-1' stopped before the task finished"
		if r.GetAttempt() != 1 || e.GetCode() != CodeAgentStopped || !e.GetRetryable() || e.GetMessage() != want {
			t.Fatalf("%s: got %v", taskID, r)
		}
	}
	stopped("t1")
	select {
	case reason := <-causes:
		if reason != "agent_stopped" {
			t.Fatalf("the handler saw %q, want agent_stopped", reason)
		}
	case <-time.After(waitFor):
		t.Fatal("the handler's context was not cancelled")
	}
	// An assignment sent before the plane saw `draining` is handed back at once, not started.
	s.assign("t2", "stuck", `{}`)
	stopped("t2")
	// The agent waits for the acknowledgements before it closes the stream, and the handler's
	// own result never goes out.
	noMoreResults := func(until <-chan time.Time) (closed bool) {
		t.Helper()
		for {
			select {
			case f, ok := <-s.frames:
				if !ok {
					return true
				}
				if rs := f.GetTaskResults().GetResults(); len(rs) > 0 {
					t.Fatalf("a result after the give-up: %v", rs)
				}
			case <-until:
				return false
			}
		}
	}
	if noMoreResults(time.After(100 * time.Millisecond)) {
		t.Fatal("the agent closed the stream before its results were acknowledged")
	}
	s.ack("t1", "t2")
	if !noMoreResults(time.After(waitFor)) {
		t.Fatal("the agent did not close the stream")
	}
	s.end <- nil
}

func TestPlaneDrainFinishesWorkThenReconnects(t *testing.T) {
	h, run := startAgent(t)
	release := make(chan struct{})
	h.agent.Handle("hold", func(context.Context, *Task) (any, error) {
		<-release
		return "ok", nil
	})
	run(h.agent)
	s1 := h.session()
	s1.registered()
	s1.assign("t1", "hold", `{}`)
	s1.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_Drain{Drain: &pb.Drain{Timeout: durationpb.New(5 * time.Second), Reason: "upgrade"}}}
	close(release)
	s1.result(t, "t1")
	s1.ack("t1")
	s1.closedByAgent(t)
	s1.end <- nil
	s2 := h.session()
	if len(s2.register.GetHeldTasks()) != 0 {
		t.Fatalf("held: %v", s2.register.GetHeldTasks())
	}
}

func TestRejectedRegistrationEndsRun(t *testing.T) {
	h, run := startAgent(t)
	run(h.agent)
	s := h.session()
	s.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_Error{Error: &pb.LinkError{
		Code: 3, Message: "bad label", Field: "register.labels", Fatal: true,
	}}}
	select {
	case err := <-h.done:
		var reg *RegistrationError
		if !errors.As(err, &reg) || reg.Field != "register.labels" {
			t.Fatalf("got %v", err)
		}
		h.done <- nil
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
	}
}

func TestChannelsAndPublish(t *testing.T) {
	h, run := startAgent(t)
	got := make(chan string, 1)
	h.agent.OnChannel("news", func(_ context.Context, m *Message) error {
		var body struct{ Text string }
		if err := m.Decode(&body); err != nil {
			return err
		}
		got <- body.Text
		return h.agent.Publish("news.seen", map[string]string{"seen": body.Text})
	})
	if err := h.agent.Publish("x", 1); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Publish before Run: %v", err)
	}
	run(h.agent)
	s := h.session()
	if subs := s.register.GetSubscriptions(); len(subs) != 1 || subs[0] != "news" {
		t.Fatalf("subscriptions: %v", subs)
	}
	s.registered()
	s.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_ChannelMessage{ChannelMessage: &pb.ChannelMessage{
		Channel: "news", MessageId: "m1", Payload: jsonPayload([]byte(`{"text":"hello"}`)),
	}}}
	select {
	case text := <-got:
		if text != "hello" {
			t.Fatalf("got %q", text)
		}
	case <-time.After(waitFor):
		t.Fatal("channel handler not called")
	}
	s.waitFrame(t, "publish", func(f *pb.ConnectRequest) bool {
		p := f.GetPublish()
		return p != nil && p.GetChannel() == "news.seen" && string(p.GetPayload().GetData()) == `{"seen":"hello"}`
	})
	if err := h.agent.Publish("bad..name", 1); err == nil {
		t.Fatal("invalid channel names are refused")
	}
}

func TestNewAgentValidates(t *testing.T) {
	bad := []struct {
		name string
		opts []Option
	}{
		{"", nil},
		{"-dash", nil},
		{"ok", []Option{WithMaxConcurrency(0)}},
		{"ok", []Option{WithMaxConcurrency(10001)}},
		{"ok", []Option{WithInstanceID("has space")}},
		{"ok", []Option{WithWeight(-1)}},
		{"ok", []Option{WithLabels(map[string]string{"": "v"})}},
	}
	for _, c := range bad {
		if _, err := NewAgent(c.name, c.opts...); err == nil {
			t.Errorf("NewAgent(%q, ...) accepted", c.name)
		}
	}
	a, err := NewAgent("fine")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.InstanceID(), "fine-") || !nameRE.MatchString(a.InstanceID()) {
		t.Fatalf("default instance id %q", a.InstanceID())
	}
	mustPanic(t, func() { a.Handle("bad name", func(context.Context, *Task) (any, error) { return nil, nil }) })
	a.Handle("x", func(context.Context, *Task) (any, error) { return nil, nil })
	mustPanic(t, func() { a.Handle("x", func(context.Context, *Task) (any, error) { return nil, nil }) })
	mustPanic(t, func() { a.OnChannel(".bad", func(context.Context, *Message) error { return nil }) })
	if _, err := a.State().Get(context.Background(), "k"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("State before Run: %v", err)
	}
}

func mustPanic(t *testing.T, fn func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Error("expected a panic")
		}
	}()
	fn()
}

func (s *fakeSession) channelMessage(channel, id string) {
	s.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_ChannelMessage{ChannelMessage: &pb.ChannelMessage{
		Channel: channel, MessageId: id, Payload: jsonPayload([]byte(`{}`)),
	}}}
}

// channelProbe is a channel handler that blocks until released (or stopped) and records how
// many of its calls run at once.
type channelProbe struct {
	release         chan struct{}
	entered         chan string   // every call, when it starts
	cancelled       chan string   // every call that saw its ctx cancelled
	afterCancel     chan struct{} // if set, a cancelled call returns only once it is closed
	current, peak   atomic.Int32
	returned        atomic.Int32
	sawCancellation atomic.Int32
}

func newChannelProbe() *channelProbe {
	return &channelProbe{release: make(chan struct{}), entered: make(chan string, 4096), cancelled: make(chan string, 4096)}
}

func (p *channelProbe) handle(ctx context.Context, m *Message) error {
	defer p.returned.Add(1)
	n := p.current.Add(1)
	defer p.current.Add(-1)
	for old := p.peak.Load(); n > old && !p.peak.CompareAndSwap(old, n); old = p.peak.Load() {
	}
	p.entered <- m.ID
	select {
	case <-p.release:
	case <-ctx.Done():
		p.sawCancellation.Add(1)
		p.cancelled <- m.ID
		if p.afterCancel != nil {
			<-p.afterCancel
		}
	}
	return nil
}

// await waits for n more calls to start and returns their message ids.
func (p *channelProbe) await(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	timeout := time.After(waitFor)
	for len(ids) < n {
		select {
		case id := <-p.entered:
			ids = append(ids, id)
		case <-timeout:
			t.Fatalf("%d of %d channel handler calls started (at most %d at once so far)", len(ids), n, p.peak.Load())
		}
	}
	return ids
}

// markerChannel: its handler's call says that every frame sent before it has been delivered
// (the agent reads its stream in order and hands each message over before reading the next).
func markerChannel(a *Agent) <-chan struct{} {
	seen := make(chan struct{}, 1)
	a.OnChannel("marker", func(context.Context, *Message) error {
		seen <- struct{}{}
		return nil
	})
	return seen
}

func (s *fakeSession) allDelivered(t *testing.T, seen <-chan struct{}) {
	t.Helper()
	s.channelMessage("marker", "marker")
	select {
	case <-seen:
	case <-time.After(waitFor):
		t.Fatal("the marker message was not handled")
	}
}

func TestChannelHandlesUpTo64MessagesAtOnce(t *testing.T) {
	h, run := startAgent(t)
	probe := newChannelProbe()
	h.agent.OnChannel("news", probe.handle)
	marker := markerChannel(h.agent)
	run(h.agent)
	s := h.session()
	s.registered()

	const sent = handlersPerChannel + 36
	for i := range sent {
		s.channelMessage("news", fmt.Sprint("m", i))
	}
	probe.await(t, handlersPerChannel) // 64 calls run at once...
	s.allDelivered(t, marker)
	select { // ...and no 65th, though 36 more have been delivered
	case id := <-probe.entered:
		t.Fatalf("call for %s started with %d running", id, handlersPerChannel)
	default:
	}
	if p := probe.peak.Load(); p != handlersPerChannel {
		t.Fatalf("peak %d, want %d", p, handlersPerChannel)
	}
	close(probe.release)
	probe.await(t, sent-handlersPerChannel) // the waiting ones get the freed slots: none is dropped
	if p := probe.peak.Load(); p != handlersPerChannel {
		t.Fatalf("peak %d, want %d", p, handlersPerChannel)
	}
}

func TestChannelDropsTheOldestWaitingMessagesPastTheBound(t *testing.T) {
	logs := &logBuffer{}
	h, run := startAgent(t, WithLogger(logs.logger()))
	probe := newChannelProbe()
	h.agent.OnChannel("news", probe.handle)
	marker := markerChannel(h.agent)
	run(h.agent)
	s := h.session()
	s.registered()

	for i := range handlersPerChannel { // every slot busy
		s.channelMessage("news", fmt.Sprint("busy", i))
	}
	probe.await(t, handlersPerChannel)
	const extra = 3
	for i := range maxWaitingMessages + extra {
		s.channelMessage("news", fmt.Sprint("w", i))
	}
	s.allDelivered(t, marker)
	if n := strings.Count(logs.String(), "the oldest waiting ones are dropped"); n != 1 {
		t.Fatalf("%d drop warnings, want 1:\n%s", n, logs.String())
	}
	close(probe.release)
	handled := map[string]bool{}
	for _, id := range probe.await(t, maxWaitingMessages) {
		handled[id] = true
	}
	for i := range extra {
		if handled[fmt.Sprint("w", i)] {
			t.Fatalf("w%d, among the oldest waiting, was handled", i)
		}
	}
	if last := fmt.Sprint("w", maxWaitingMessages+extra-1); !handled[last] {
		t.Fatalf("the newest message %s was not handled", last)
	}
	if len(handled) != maxWaitingMessages {
		t.Fatalf("%d distinct messages handled, want %d", len(handled), maxWaitingMessages)
	}
	h.agent.mu.Lock()
	dropped := h.agent.rt.channelDropped("news")
	h.agent.mu.Unlock()
	if dropped != extra {
		t.Fatalf("dropped count %d, want %d", dropped, extra)
	}
}

func TestChannelHandlersAreCancelledAndAwaitedWhenTheAgentStops(t *testing.T) {
	h, run := startAgent(t)
	probe := newChannelProbe()              // never released: its calls end when their ctx is cancelled...
	probe.afterCancel = make(chan struct{}) // ...and once the test lets them
	h.agent.OnChannel("news", probe.handle)
	marker := markerChannel(h.agent)
	run(h.agent)
	letCancelledReturn := sync.OnceFunc(func() { close(probe.afterCancel) })
	t.Cleanup(letCancelledReturn) // before the harness's: it waits for Run
	s := h.session()
	s.registered()
	for i := range handlersPerChannel + 10 {
		s.channelMessage("news", fmt.Sprint("m", i))
	}
	probe.await(t, handlersPerChannel)
	s.allDelivered(t, marker)

	var returnedAtRun atomic.Int32
	runReturned := make(chan error, 1)
	go func() {
		err := <-h.done
		returnedAtRun.Store(probe.returned.Load())
		runReturned <- err
		h.done <- nil // for the cleanup
	}()
	h.cancel()
	s.closedByAgent(t)
	for range handlersPerChannel {
		select {
		case <-probe.cancelled:
		case <-time.After(waitFor):
			t.Fatalf("%d of %d channel handler calls saw their ctx cancelled", probe.sawCancellation.Load(), handlersPerChannel)
		}
	}
	select { // the calls are still running: Run must not return yet
	case err := <-runReturned:
		t.Fatalf("Run returned (%v) while %d channel handler calls were running", err, handlersPerChannel-returnedAtRun.Load())
	case <-time.After(100 * time.Millisecond):
	}
	letCancelledReturn()
	select {
	case err := <-runReturned:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
	}
	// Run waited for every call it started; the waiting messages were dropped, not handled.
	if r := returnedAtRun.Load(); r != handlersPerChannel {
		t.Fatalf("when Run returned %d channel handler calls had returned, want %d", r, handlersPerChannel)
	}
	select {
	case id := <-probe.entered:
		t.Fatalf("%s was handled after the agent stopped", id)
	default:
	}
}

func TestStopHandsRunningTasksBackAtOnceWithoutWaitingForTheDrainTimeout(t *testing.T) {
	h, run := startAgent(t, WithDrainTimeout(time.Hour)) // only Stop can end this drain in time
	h.agent.Handle("stuck", func(ctx context.Context, task *Task) (any, error) {
		<-ctx.Done()
		return "too late", nil
	})
	h.agent.Stop() // not running yet: nothing happens
	run(h.agent)
	s := h.session()
	s.registered()
	s.assign("t1", "stuck", `{}`)
	s.waitFrame(t, "STARTED", func(f *pb.ConnectRequest) bool { return f.GetTaskUpdates() != nil })

	h.agent.Stop()
	r := s.result(t, "t1")
	if e := r.GetError(); e.GetCode() != CodeAgentStopped || !e.GetRetryable() {
		t.Fatalf("got %v, want a retryable agent_stopped", r)
	}
	s.ack("t1")
	select {
	case err := <-h.done:
		h.done <- err // for the harness's cleanup, which waits for it too
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return after Stop")
	}
}

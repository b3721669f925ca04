package meshplane

// The client's batch-submit, listing and agent calls against an in-process fake of the
// control plane's TaskService and AgentService that records every request (the channel and audit
// listings, against fakes of ChannelService and AuditService: client_listings_test.go).

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// page is what the fake answers to one page token.
type page[T any] struct {
	items []T
	next  string
}

// recorder keeps the requests of one method, in order.
type recorder[R proto.Message] struct {
	mu       sync.Mutex
	requests []R
}

func (r *recorder[R]) add(req R) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, proto.Clone(req).(R))
}

func (r *recorder[R]) all() []R {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

// serve answers a paged listing from pages (by token), or err when set.
func serve[T any](pages map[string]page[T], token string, err error) (page[T], error) {
	if err != nil {
		return page[T]{}, err
	}
	p, ok := pages[token]
	if !ok {
		return page[T]{}, status.Errorf(codes.InvalidArgument, "unknown page token %q", token)
	}
	return p, nil
}

type fakeTasks struct {
	pb.UnimplementedTaskServiceServer
	submits     recorder[*pb.SubmitTaskRequest]
	batches     recorder[*pb.BatchSubmitTasksRequest]
	lists       recorder[*pb.ListTasksRequest]
	dedup       []bool // BatchSubmitTasks' deduplicated flags (and SubmitTask's, first one)
	extraTasks  int    // BatchSubmitTasks answers this many tasks more than it was sent
	taskPages   map[string]page[*pb.Task]
	submitErr   error
	listErrFrom string // ListTasks fails with listErr from this page token on
	listErr     error
}

func (f *fakeTasks) SubmitTask(_ context.Context, req *pb.SubmitTaskRequest) (*pb.SubmitTaskResponse, error) {
	f.submits.add(req)
	if f.submitErr != nil {
		return nil, f.submitErr
	}
	return &pb.SubmitTaskResponse{
		Task:         &pb.Task{Id: "t-single", Target: req.GetTarget(), State: pb.TaskState_TASK_STATE_QUEUED},
		Deduplicated: len(f.dedup) > 0 && f.dedup[0],
	}, nil
}

func (f *fakeTasks) BatchSubmitTasks(_ context.Context, req *pb.BatchSubmitTasksRequest) (*pb.BatchSubmitTasksResponse, error) {
	f.batches.add(req)
	if f.submitErr != nil {
		return nil, f.submitErr
	}
	resp := &pb.BatchSubmitTasksResponse{Deduplicated: f.dedup}
	for i := range len(req.GetRequests()) + f.extraTasks {
		r := req.GetRequests()[min(i, len(req.GetRequests())-1)]
		resp.Tasks = append(resp.Tasks, &pb.Task{
			Id: fmt.Sprintf("t-%d", i), Target: r.GetTarget(), State: pb.TaskState_TASK_STATE_QUEUED,
			CorrelationId: r.GetCorrelationId(), Metadata: r.GetMetadata(),
		})
	}
	return resp, nil
}

func (f *fakeTasks) ListTasks(_ context.Context, req *pb.ListTasksRequest) (*pb.ListTasksResponse, error) {
	f.lists.add(req)
	var err error
	if f.listErr != nil && req.GetPageToken() == f.listErrFrom {
		err = f.listErr
	}
	p, err := serve(f.taskPages, req.GetPageToken(), err)
	if err != nil {
		return nil, err
	}
	return &pb.ListTasksResponse{Tasks: p.items, NextPageToken: p.next}, nil
}

type fakeAgents struct {
	pb.UnimplementedAgentServiceServer
	lists         recorder[*pb.ListAgentsRequest]
	gets          recorder[*pb.GetAgentRequest]
	instanceLists recorder[*pb.ListAgentInstancesRequest]
	drains        recorder[*pb.DrainAgentInstanceRequest]
	agentPages    map[string]page[*pb.Agent]
	instancePages map[string]page[*pb.AgentInstance]
	drained       *pb.AgentInstance // what DrainAgentInstance answers
	err           error
}

func (f *fakeAgents) ListAgents(_ context.Context, req *pb.ListAgentsRequest) (*pb.ListAgentsResponse, error) {
	f.lists.add(req)
	p, err := serve(f.agentPages, req.GetPageToken(), f.err)
	if err != nil {
		return nil, err
	}
	return &pb.ListAgentsResponse{Agents: p.items, NextPageToken: p.next}, nil
}

func (f *fakeAgents) GetAgent(_ context.Context, req *pb.GetAgentRequest) (*pb.GetAgentResponse, error) {
	f.gets.add(req)
	if f.err != nil {
		return nil, f.err
	}
	for _, p := range f.agentPages {
		for _, a := range p.items {
			if a.GetName() == req.GetAgentName() {
				return &pb.GetAgentResponse{Agent: a}, nil
			}
		}
	}
	return nil, status.Errorf(codes.NotFound, "agent %s not found", req.GetAgentName())
}

func (f *fakeAgents) ListAgentInstances(_ context.Context, req *pb.ListAgentInstancesRequest) (*pb.ListAgentInstancesResponse, error) {
	f.instanceLists.add(req)
	p, err := serve(f.instancePages, req.GetPageToken(), f.err)
	if err != nil {
		return nil, err
	}
	return &pb.ListAgentInstancesResponse{Instances: p.items, NextPageToken: p.next}, nil
}

func (f *fakeAgents) DrainAgentInstance(_ context.Context, req *pb.DrainAgentInstanceRequest) (*pb.DrainAgentInstanceResponse, error) {
	f.drains.add(req)
	if f.err != nil {
		return nil, f.err
	}
	return &pb.DrainAgentInstanceResponse{Instance: f.drained}, nil
}

// startFakeAPI serves tasks and agents and returns a client of them.
func startFakeAPI(t *testing.T, tasks *fakeTasks, agents *fakeAgents) *Client {
	t.Helper()
	return startFakeServices(t, func(srv *grpc.Server) {
		pb.RegisterTaskServiceServer(srv, tasks)
		pb.RegisterAgentServiceServer(srv, agents)
	})
}

// startFakeServices serves what register registers and returns a client of it.
func startFakeServices(t *testing.T, register func(*grpc.Server)) *Client {
	t.Helper()
	srv := grpc.NewServer()
	register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	client, err := NewClient(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func ids(tasks []*TaskInfo) []string {
	out := make([]string, len(tasks))
	for i, t := range tasks {
		out[i] = t.ID
	}
	return out
}

func tokens[R interface{ GetPageToken() string }](requests []R) []string {
	out := make([]string, len(requests))
	for i, r := range requests {
		out[i] = r.GetPageToken()
	}
	return out
}

func TestSubmitManySendsEveryTaskWithItsOptionsInOneCall(t *testing.T) {
	tasks := &fakeTasks{dedup: []bool{false, true, false}}
	client := startFakeAPI(t, tasks, &fakeAgents{})

	got, err := client.SubmitMany(testContext(t), []TaskRequest{
		NewTaskRequest("text.summarize", map[string]string{"text": "a"},
			WithPriority(7), WithCorrelationID("corr-1"), WithLabelSelector(map[string]string{"lang": "go"})),
		NewTaskRequest("text.summarize", map[string]string{"text": "b"},
			WithIdempotencyKey("order-42"), WithMaxAttempts(3), WithStartToClose(time.Minute)),
		{Capability: "blob.store", Input: Blob{Data: []byte{1, 2}, ContentType: "image/png"},
			Options: []SubmitOption{WithMetadata(map[string]string{"k": "v"}), WithAgentName("storer")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"t-0", "t-1", "t-2"}; !slices.Equal(ids(got), want) {
		t.Errorf("tasks %v, want %v (request order)", ids(got), want)
	}
	for i, want := range []bool{false, true, false} {
		if got[i].Deduplicated != want {
			t.Errorf("task %d: Deduplicated %v, want %v", i, got[i].Deduplicated, want)
		}
	}
	if got[0].CorrelationID != "corr-1" || got[2].Capability != "blob.store" || got[2].Metadata["k"] != "v" {
		t.Errorf("tasks not converted: %+v, %+v", got[0], got[2])
	}

	batches := tasks.batches.all()
	if len(batches) != 1 || len(tasks.submits.all()) != 0 {
		t.Fatalf("%d BatchSubmitTasks and %d SubmitTask calls, want one batch only", len(batches), len(tasks.submits.all()))
	}
	reqs := batches[0].GetRequests()
	if len(reqs) != 3 {
		t.Fatalf("batch of %d requests, want 3", len(reqs))
	}
	a, b, c := reqs[0], reqs[1], reqs[2]
	if a.GetTarget().GetCapability() != "text.summarize" || string(a.GetInput().GetData()) != `{"text":"a"}` ||
		a.GetPriority() != 7 || a.GetCorrelationId() != "corr-1" || a.GetTarget().GetLabelSelector()["lang"] != "go" {
		t.Errorf("request 0 lost its options: %v", a)
	}
	if string(b.GetInput().GetData()) != `{"text":"b"}` || b.GetIdempotencyKey() != "order-42" ||
		b.GetRetryPolicy().GetMaxAttempts() != 3 || b.GetTimeouts().GetStartToClose().AsDuration() != time.Minute {
		t.Errorf("request 1 lost its options: %v", b)
	}
	if c.GetTarget().GetCapability() != "blob.store" || c.GetInput().GetContentType() != "image/png" ||
		!slices.Equal(c.GetInput().GetData(), []byte{1, 2}) || c.GetMetadata()["k"] != "v" || c.GetTarget().GetAgentName() != "storer" {
		t.Errorf("request 2 lost its options: %v", c)
	}
}

func TestIntegersBeyondInt32SaturateInsteadOfWrapping(t *testing.T) {
	tasks := &fakeTasks{taskPages: threeTaskPages()}
	agents := &fakeAgents{agentPages: map[string]page[*pb.Agent]{"": {}}, instancePages: map[string]page[*pb.AgentInstance]{"": {}}}
	client := startFakeAPI(t, tasks, agents)
	ctx := testContext(t)

	// 1<<32 + 7 wrapped to int32 would be 7: a valid priority and attempt count, silently not the one asked for.
	_, err := client.SubmitMany(ctx, []TaskRequest{
		NewTaskRequest("conf.echo", nil, WithPriority(1<<32+7), WithMaxAttempts(1<<32+7)),
		NewTaskRequest("conf.echo", nil, WithPriority(-(1<<32)-7)),
	})
	if err != nil {
		t.Fatal(err)
	}
	reqs := tasks.batches.all()[0].GetRequests()
	if p, n := reqs[0].GetPriority(), reqs[0].GetRetryPolicy().GetMaxAttempts(); p != math.MaxInt32 || n != math.MaxInt32 {
		t.Errorf("priority %d, max attempts %d; want both %d (out of range, for the plane to refuse)", p, n, math.MaxInt32)
	}
	if p := reqs[1].GetPriority(); p != math.MinInt32 {
		t.Errorf("priority %d, want %d", p, math.MinInt32)
	}

	if _, err := client.ListTasksPage(ctx, TaskFilter{}, 1<<32+5, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := client.ListAgentsPage(ctx, "", 1<<32+5, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := client.ListInstancesPage(ctx, "", false, 1<<32+5, ""); err != nil {
		t.Fatal(err)
	}
	sizes := []int32{
		tasks.lists.all()[0].GetPageSize(), agents.lists.all()[0].GetPageSize(), agents.instanceLists.all()[0].GetPageSize(),
	}
	if !slices.Equal(sizes, []int32{math.MaxInt32, math.MaxInt32, math.MaxInt32}) {
		t.Errorf("page sizes sent %v, want int32's most (the plane clamps it to its own)", sizes)
	}
}

func TestSubmitReportsDeduplication(t *testing.T) {
	for _, dedup := range []bool{false, true} {
		client := startFakeAPI(t, &fakeTasks{dedup: []bool{dedup}}, &fakeAgents{})
		task, err := client.Submit(testContext(t), "greet", nil, WithIdempotencyKey("k"))
		if err != nil || task.ID != "t-single" || task.Deduplicated != dedup {
			t.Errorf("Submit = %+v, %v; want Deduplicated %v", task, err, dedup)
		}
	}
}

func TestSubmitManyErrors(t *testing.T) {
	t.Run("refused batch", func(t *testing.T) {
		tasks := &fakeTasks{submitErr: status.Error(codes.InvalidArgument, "requests[1].target.capability: required")}
		client := startFakeAPI(t, tasks, &fakeAgents{})
		got, err := client.SubmitMany(testContext(t), []TaskRequest{NewTaskRequest("a", 1), NewTaskRequest("", 2)})
		var rpc *RPCError
		if got != nil || !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &rpc) || rpc.Message != "requests[1].target.capability: required" {
			t.Errorf("SubmitMany = %v, %v; want the plane's INVALID_ARGUMENT", got, err)
		}
	})
	t.Run("input not encodable", func(t *testing.T) {
		tasks := &fakeTasks{}
		client := startFakeAPI(t, tasks, &fakeAgents{})
		_, err := client.SubmitMany(testContext(t), []TaskRequest{NewTaskRequest("a", 1), NewTaskRequest("a", func() {})})
		if err == nil || !strings.HasPrefix(err.Error(), "meshplane: value is not JSON-encodable") ||
			!strings.HasSuffix(err.Error(), "(task 1 of the batch)") || len(tasks.batches.all()) != 0 {
			t.Errorf("SubmitMany = %v after %d calls; want an error naming task 1, and no call", err, len(tasks.batches.all()))
		}
	})
	t.Run("answer does not match the batch", func(t *testing.T) {
		client := startFakeAPI(t, &fakeTasks{extraTasks: 1}, &fakeAgents{})
		if got, err := client.SubmitMany(testContext(t), []TaskRequest{NewTaskRequest("a", 1)}); err == nil {
			t.Errorf("SubmitMany = %v, want an error", ids(got))
		}
	})
}

func listedTask(id string, state pb.TaskState) *pb.Task {
	return &pb.Task{Id: id, State: state, Target: &pb.TaskTarget{Capability: "conf.echo"}, CorrelationId: "run-1"}
}

// threeTaskPages: five tasks over three pages, tokens "" → "p2" → "p3".
func threeTaskPages() map[string]page[*pb.Task] {
	ok := pb.TaskState_TASK_STATE_SUCCEEDED
	return map[string]page[*pb.Task]{
		"":   {items: []*pb.Task{listedTask("t5", ok), listedTask("t4", ok)}, next: "p2"},
		"p2": {items: []*pb.Task{listedTask("t3", ok), listedTask("t2", ok)}, next: "p3"},
		"p3": {items: []*pb.Task{listedTask("t1", ok)}},
	}
}

func TestListTasksPageSendsTheFilterAndReturnsTheNextToken(t *testing.T) {
	tasks := &fakeTasks{taskPages: threeTaskPages()}
	client := startFakeAPI(t, tasks, &fakeAgents{})
	filter := TaskFilter{State: TaskSucceeded, Capability: "conf.echo", CorrelationID: "run-1"}

	var all []*TaskInfo
	token := ""
	for {
		p, err := client.ListTasksPage(testContext(t), filter, 2, token)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.Tasks...)
		if token = p.NextPageToken; token == "" {
			break
		}
	}
	if want := []string{"t5", "t4", "t3", "t2", "t1"}; !slices.Equal(ids(all), want) {
		t.Errorf("tasks %v, want %v", ids(all), want)
	}
	if all[0].State != TaskSucceeded || all[0].Capability != "conf.echo" || all[0].CorrelationID != "run-1" {
		t.Errorf("task not converted: %+v", all[0])
	}
	reqs := tasks.lists.all()
	if got, want := tokens(reqs), []string{"", "p2", "p3"}; !slices.Equal(got, want) {
		t.Errorf("page tokens sent %q, want %q", got, want)
	}
	for _, r := range reqs {
		if r.GetState() != pb.TaskState_TASK_STATE_SUCCEEDED || r.GetCapability() != "conf.echo" ||
			r.GetCorrelationId() != "run-1" || r.GetPageSize() != 2 {
			t.Errorf("request %v does not carry the filter and page size", r)
		}
	}
}

func TestListTasksFollowsEveryPage(t *testing.T) {
	tasks := &fakeTasks{taskPages: threeTaskPages()}
	client := startFakeAPI(t, tasks, &fakeAgents{})
	var got []*TaskInfo
	for task, err := range client.ListTasks(testContext(t), TaskFilter{Capability: "conf.echo"}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, task)
	}
	if want := []string{"t5", "t4", "t3", "t2", "t1"}; !slices.Equal(ids(got), want) {
		t.Errorf("tasks %v, want %v", ids(got), want)
	}
	reqs := tasks.lists.all()
	if got, want := tokens(reqs), []string{"", "p2", "p3"}; !slices.Equal(got, want) {
		t.Errorf("page tokens sent %q, want %q", got, want)
	}
	for _, r := range reqs {
		if r.GetCapability() != "conf.echo" || r.GetState() != pb.TaskState_TASK_STATE_UNSPECIFIED || r.GetPageSize() != 0 {
			t.Errorf("request %v: want the filter on every page and the plane's page size", r)
		}
	}
}

func TestListTasksStopsWhenTheLoopDoes(t *testing.T) {
	tasks := &fakeTasks{taskPages: threeTaskPages()}
	client := startFakeAPI(t, tasks, &fakeAgents{})
	for task, err := range client.ListTasks(testContext(t), TaskFilter{}) {
		if err != nil || task.ID != "t5" {
			t.Fatalf("first = %v, %v", task, err)
		}
		break
	}
	if n := len(tasks.lists.all()); n != 1 {
		t.Errorf("%d pages fetched, want 1", n)
	}
}

func TestListTasksEndsWithTheError(t *testing.T) {
	tasks := &fakeTasks{taskPages: threeTaskPages(), listErrFrom: "p2", listErr: status.Error(codes.Unavailable, "plane down")}
	client := startFakeAPI(t, tasks, &fakeAgents{})
	var got []string
	var errs []error
	for task, err := range client.ListTasks(testContext(t), TaskFilter{}) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		got = append(got, task.ID)
	}
	if !slices.Equal(got, []string{"t5", "t4"}) || len(errs) != 1 || !errors.Is(errs[0], ErrUnavailable) {
		t.Errorf("got %v then %v; want the first page then one error matching ErrUnavailable", got, errs)
	}
}

func TestTaskStateFilterIsChecked(t *testing.T) {
	tasks := &fakeTasks{taskPages: threeTaskPages()}
	client := startFakeAPI(t, tasks, &fakeAgents{})
	if _, err := client.ListTasksPage(testContext(t), TaskFilter{State: "DONE"}, 0, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unknown state: %v, want ErrInvalidArgument", err)
	}
	for _, err := range client.ListTasks(testContext(t), TaskFilter{State: "UNSPECIFIED"}) {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("UNSPECIFIED state: %v, want ErrInvalidArgument", err)
		}
	}
	if n := len(tasks.lists.all()); n != 0 {
		t.Errorf("%d calls made with a bad state, want none", n)
	}
	for _, s := range []TaskState{TaskQueued, TaskAssigned, TaskRunning, TaskSucceeded, TaskFailed, TaskCancelled, TaskTimedOut, TaskDeadLetter} {
		if _, err := client.ListTasksPage(testContext(t), TaskFilter{State: s}, 0, ""); err != nil {
			t.Errorf("state %s: %v", s, err)
		}
		reqs := tasks.lists.all()
		if got := taskState(reqs[len(reqs)-1].GetState()); got != s {
			t.Errorf("state %s sent as %s", s, got)
		}
	}
}

func TestParseTaskState(t *testing.T) {
	for in, want := range map[string]TaskState{
		"SUCCEEDED": TaskSucceeded, "dead_letter": TaskDeadLetter, " Timed_Out ": TaskTimedOut, "TASK_STATE_QUEUED": TaskQueued,
	} {
		if got, err := ParseTaskState(in); err != nil || got != want {
			t.Errorf("ParseTaskState(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "DONE", "UNSPECIFIED", "TASK_STATE_UNSPECIFIED"} {
		if got, err := ParseTaskState(in); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParseTaskState(%q) = %q, %v; want ErrInvalidArgument", in, got, err)
		}
	}
}

func schema(t *testing.T, m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestListAgentsFollowsPagesAndConverts(t *testing.T) {
	updated := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	agents := &fakeAgents{agentPages: map[string]page[*pb.Agent]{
		"": {items: []*pb.Agent{{
			Name: "alpha", Version: "1.2.0", Description: "first", Status: pb.AgentStatus_AGENT_STATUS_ONLINE,
			ConnectedInstances: 2, Labels: map[string]string{"lang": "go"}, UpdateTime: timestamppb.New(updated),
			Capabilities: []*pb.Capability{
				{Name: "conf.echo", Description: "echoes", InputSchema: schema(t, map[string]any{"type": "object"})},
				{Name: "conf.whoami"},
			},
		}}, next: "a2"},
		"a2": {items: []*pb.Agent{{Name: "beta", Status: pb.AgentStatus_AGENT_STATUS_DRAINING}}, next: "a3"},
		"a3": {items: []*pb.Agent{{Name: "gamma", Status: pb.AgentStatus_AGENT_STATUS_OFFLINE}}},
	}}
	client := startFakeAPI(t, &fakeTasks{}, agents)

	got, err := client.ListAgents(testContext(t), "conf.echo")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var statuses []AgentStatus
	for _, a := range got {
		names, statuses = append(names, a.Name), append(statuses, a.Status)
	}
	if !slices.Equal(names, []string{"alpha", "beta", "gamma"}) || !slices.Equal(statuses, []AgentStatus{AgentOnline, AgentDraining, AgentOffline}) {
		t.Errorf("agents %v %v, want alpha ONLINE, beta DRAINING, gamma OFFLINE", names, statuses)
	}
	a := got[0]
	if a.Version != "1.2.0" || a.Description != "first" || a.ConnectedInstances != 2 || a.Labels["lang"] != "go" ||
		!a.UpdateTime.Equal(updated) || len(a.Capabilities) != 2 {
		t.Fatalf("agent not converted: %+v", a)
	}
	if c := a.Capabilities[0]; c.Name != "conf.echo" || c.Description != "echoes" || c.InputSchema["type"] != "object" || c.OutputSchema != nil {
		t.Errorf("capability not converted: %+v", c)
	}
	if got[1].Labels == nil || got[1].Capabilities == nil {
		t.Errorf("empty labels/capabilities should be empty, not nil: %+v", got[1])
	}

	reqs := agents.lists.all()
	if got, want := tokens(reqs), []string{"", "a2", "a3"}; !slices.Equal(got, want) {
		t.Errorf("page tokens sent %q, want %q", got, want)
	}
	for _, r := range reqs {
		if r.GetCapability() != "conf.echo" || r.GetPageSize() != 1000 {
			t.Errorf("request %v: want capability conf.echo and page size 1000 on every page", r)
		}
	}
}

func TestGetAgent(t *testing.T) {
	agents := &fakeAgents{agentPages: map[string]page[*pb.Agent]{
		"": {items: []*pb.Agent{{Name: "alpha", Status: pb.AgentStatus_AGENT_STATUS_ONLINE, ConnectedInstances: 1}}},
	}}
	client := startFakeAPI(t, &fakeTasks{}, agents)
	a, err := client.GetAgent(testContext(t), "alpha")
	if err != nil || a.Name != "alpha" || a.Status != AgentOnline || a.ConnectedInstances != 1 {
		t.Errorf("GetAgent(alpha) = %+v, %v", a, err)
	}
	if reqs := agents.gets.all(); len(reqs) != 1 || reqs[0].GetAgentName() != "alpha" {
		t.Errorf("requests %v", reqs)
	}
	a, err = client.GetAgent(testContext(t), "nobody")
	if a != nil || !errors.Is(err, ErrNotFound) {
		t.Errorf("GetAgent(nobody) = %+v, %v; want ErrNotFound", a, err)
	}
}

func TestListInstancesFollowsPagesAndConverts(t *testing.T) {
	connected := time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)
	instance := &pb.AgentInstance{
		InstanceId: "go-1", AgentName: "conf-go", Version: "0.1.0", SessionId: "s-1",
		Status: pb.AgentInstanceStatus_AGENT_INSTANCE_STATUS_CONNECTED, Sdk: &pb.SdkInfo{Language: "go", Version: "0.1.0"},
		Node: "host-a", Pid: 4242, Labels: map[string]string{"lang": "go"}, Capabilities: []string{"conf.echo", "conf.whoami"},
		MaxConcurrency: 16, InFlight: 3, Load: 0.25, Weight: 2, ReplicaId: "r-1",
		ConnectTime: timestamppb.New(connected), LastSeenTime: timestamppb.New(connected.Add(time.Minute)),
	}
	agents := &fakeAgents{instancePages: map[string]page[*pb.AgentInstance]{
		"":   {items: []*pb.AgentInstance{instance}, next: "i2"},
		"i2": {items: []*pb.AgentInstance{{InstanceId: "py-1", AgentName: "conf-python", Status: pb.AgentInstanceStatus_AGENT_INSTANCE_STATUS_DRAINING}}, next: "i3"},
		"i3": {items: []*pb.AgentInstance{{InstanceId: "ts-1", AgentName: "conf-ts", Status: pb.AgentInstanceStatus_AGENT_INSTANCE_STATUS_DISCONNECTED}}},
	}}
	client := startFakeAPI(t, &fakeTasks{}, agents)

	for _, tc := range []struct {
		agent, sent  string
		disconnected bool
	}{{"", "-", false}, {"-", "-", true}, {"conf-go", "conf-go", false}} {
		before := len(agents.instanceLists.all())
		got, err := client.ListInstances(testContext(t), tc.agent, tc.disconnected)
		if err != nil {
			t.Fatal(err)
		}
		var listed []string
		for _, i := range got {
			listed = append(listed, i.InstanceID+"/"+string(i.Status))
		}
		if want := []string{"go-1/CONNECTED", "py-1/DRAINING", "ts-1/DISCONNECTED"}; !slices.Equal(listed, want) {
			t.Errorf("instances %v, want %v", listed, want)
		}
		reqs := agents.instanceLists.all()[before:]
		if got, want := tokens(reqs), []string{"", "i2", "i3"}; !slices.Equal(got, want) {
			t.Errorf("page tokens sent %q, want %q", got, want)
		}
		for _, r := range reqs {
			if r.GetAgentName() != tc.sent || r.GetIncludeDisconnected() != tc.disconnected || r.GetPageSize() != 1000 {
				t.Errorf("ListInstances(%q, %v) sent %v", tc.agent, tc.disconnected, r)
			}
		}
		if tc.agent != "" {
			continue
		}
		want := &InstanceInfo{
			InstanceID: "go-1", AgentName: "conf-go", Version: "0.1.0", Status: InstanceConnected, SessionID: "s-1",
			Capabilities: []string{"conf.echo", "conf.whoami"}, MaxConcurrency: 16, InFlight: 3, Load: 0.25, Weight: 2,
			Labels: map[string]string{"lang": "go"}, SDKLanguage: "go", SDKVersion: "0.1.0", Node: "host-a", PID: 4242,
			ReplicaID: "r-1", ConnectTime: connected, LastSeenTime: connected.Add(time.Minute),
		}
		if !reflect.DeepEqual(got[0], want) {
			t.Errorf("instance\n%+v\nwant\n%+v", got[0], want)
		}
		if got[1].Labels == nil || got[1].Capabilities == nil {
			t.Errorf("empty labels/capabilities should be empty, not nil: %+v", got[1])
		}
	}
}

func agentNames(agents []*AgentInfo) []string {
	out := make([]string, len(agents))
	for i, a := range agents {
		out[i] = a.Name
	}
	return out
}

func instanceIDs(instances []*InstanceInfo) []string {
	out := make([]string, len(instances))
	for i, inst := range instances {
		out[i] = inst.InstanceID
	}
	return out
}

func TestListAgentsPageSendsSizeAndTokenAndReturnsTheNextToken(t *testing.T) {
	agents := &fakeAgents{agentPages: map[string]page[*pb.Agent]{
		"":   {items: []*pb.Agent{{Name: "alpha"}, {Name: "beta"}}, next: "a2"},
		"a2": {items: []*pb.Agent{{Name: "gamma", Status: pb.AgentStatus_AGENT_STATUS_ONLINE}}},
	}}
	client := startFakeAPI(t, &fakeTasks{}, agents)

	first, err := client.ListAgentsPage(testContext(t), "conf.echo", 2, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(agentNames(first.Agents), []string{"alpha", "beta"}) || first.NextPageToken != "a2" {
		t.Errorf("first page %v, next %q; want [alpha beta], next a2", agentNames(first.Agents), first.NextPageToken)
	}
	last, err := client.ListAgentsPage(testContext(t), "conf.echo", 0, first.NextPageToken)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(agentNames(last.Agents), []string{"gamma"}) || last.Agents[0].Status != AgentOnline || last.NextPageToken != "" {
		t.Errorf("last page %+v, next %q; want gamma ONLINE, no next", last.Agents, last.NextPageToken)
	}

	reqs := agents.lists.all()
	if got, want := tokens(reqs), []string{"", "a2"}; !slices.Equal(got, want) {
		t.Fatalf("page tokens sent %q, want %q", got, want)
	}
	for i, size := range []int32{2, 0} {
		if r := reqs[i]; r.GetCapability() != "conf.echo" || r.GetPageSize() != size {
			t.Errorf("request %d = %v; want capability conf.echo and page size %d", i, r, size)
		}
	}
}

func TestListInstancesPageSendsSizeAndTokenAndReturnsTheNextToken(t *testing.T) {
	agents := &fakeAgents{instancePages: map[string]page[*pb.AgentInstance]{
		"":   {items: []*pb.AgentInstance{{InstanceId: "go-1"}, {InstanceId: "go-2"}}, next: "i2"},
		"i2": {items: []*pb.AgentInstance{{InstanceId: "go-3", Status: pb.AgentInstanceStatus_AGENT_INSTANCE_STATUS_DISCONNECTED}}},
	}}
	client := startFakeAPI(t, &fakeTasks{}, agents)

	first, err := client.ListInstancesPage(testContext(t), "", true, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(instanceIDs(first.Instances), []string{"go-1", "go-2"}) || first.NextPageToken != "i2" {
		t.Errorf("first page %v, next %q; want [go-1 go-2], next i2", instanceIDs(first.Instances), first.NextPageToken)
	}
	last, err := client.ListInstancesPage(testContext(t), "conf-go", false, 0, first.NextPageToken)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(instanceIDs(last.Instances), []string{"go-3"}) || last.Instances[0].Status != InstanceDisconnected || last.NextPageToken != "" {
		t.Errorf("last page %+v, next %q; want go-3 DISCONNECTED, no next", last.Instances, last.NextPageToken)
	}

	reqs := agents.instanceLists.all()
	if got, want := tokens(reqs), []string{"", "i2"}; !slices.Equal(got, want) {
		t.Fatalf("page tokens sent %q, want %q", got, want)
	}
	for i, want := range []struct {
		agent        string
		disconnected bool
		size         int32
	}{{"-", true, 2}, {"conf-go", false, 0}} {
		if r := reqs[i]; r.GetAgentName() != want.agent || r.GetIncludeDisconnected() != want.disconnected || r.GetPageSize() != want.size {
			t.Errorf("request %d = %v; want agent %q, include disconnected %v, page size %d", i, r, want.agent, want.disconnected, want.size)
		}
	}
}

func TestDrainInstanceSendsTheRequestAndReturnsTheInstance(t *testing.T) {
	connected := time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC)
	agents := &fakeAgents{drained: &pb.AgentInstance{
		InstanceId: "go-1", AgentName: "greeter", Version: "0.2.0", SessionId: "s-9",
		Status: pb.AgentInstanceStatus_AGENT_INSTANCE_STATUS_DRAINING, Sdk: &pb.SdkInfo{Language: "go", Version: "0.1.0"},
		Capabilities: []string{"greet"}, MaxConcurrency: 8, InFlight: 2, Load: 0.5, Weight: 3,
		Labels: map[string]string{"zone": "a"}, Node: "host-b", Pid: 77, ReplicaId: "r-2",
		ConnectTime: timestamppb.New(connected), LastSeenTime: timestamppb.New(connected.Add(time.Second)),
	}}
	client := startFakeAPI(t, &fakeTasks{}, agents)

	got, err := client.DrainInstance(testContext(t), "greeter", "go-1", 90*time.Second, "upgrade")
	if err != nil {
		t.Fatal(err)
	}
	want := &InstanceInfo{
		InstanceID: "go-1", AgentName: "greeter", Version: "0.2.0", Status: InstanceDraining, SessionID: "s-9",
		Capabilities: []string{"greet"}, MaxConcurrency: 8, InFlight: 2, Load: 0.5, Weight: 3,
		Labels: map[string]string{"zone": "a"}, SDKLanguage: "go", SDKVersion: "0.1.0", Node: "host-b", PID: 77,
		ReplicaID: "r-2", ConnectTime: connected, LastSeenTime: connected.Add(time.Second),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("drained instance\n%+v\nwant\n%+v", got, want)
	}

	if _, err := client.DrainInstance(testContext(t), "greeter", "go-2", 0, ""); err != nil {
		t.Fatal(err)
	}
	reqs := agents.drains.all()
	if len(reqs) != 2 {
		t.Fatalf("%d DrainAgentInstance calls, want 2", len(reqs))
	}
	if r := reqs[0]; r.GetAgentName() != "greeter" || r.GetInstanceId() != "go-1" || r.GetReason() != "upgrade" ||
		r.GetTimeout().AsDuration() != 90*time.Second {
		t.Errorf("request %v; want greeter/go-1, reason upgrade, timeout 90s", r)
	}
	if r := reqs[1]; r.GetAgentName() != "greeter" || r.GetInstanceId() != "go-2" || r.GetReason() != "" || r.GetTimeout() != nil {
		t.Errorf("request %v; want greeter/go-2, no reason, no timeout (the plane's default)", r)
	}
}

func TestAgentCallsMapErrors(t *testing.T) {
	client := startFakeAPI(t, &fakeTasks{}, &fakeAgents{err: status.Error(codes.PermissionDenied, "no")})
	if got, err := client.ListAgents(testContext(t), ""); got != nil || !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("ListAgents = %v, %v; want ErrPermissionDenied", got, err)
	}
	if got, err := client.ListInstances(testContext(t), "", false); got != nil || !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("ListInstances = %v, %v; want ErrPermissionDenied", got, err)
	}
	if got, err := client.GetAgent(testContext(t), "alpha"); got != nil || !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("GetAgent = %v, %v; want ErrPermissionDenied", got, err)
	}
	if p, err := client.ListAgentsPage(testContext(t), "", 0, ""); p != nil || !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("ListAgentsPage = %v, %v; want ErrPermissionDenied", p, err)
	}
	if p, err := client.ListInstancesPage(testContext(t), "", false, 0, ""); p != nil || !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("ListInstancesPage = %v, %v; want ErrPermissionDenied", p, err)
	}
	if got, err := client.DrainInstance(testContext(t), "alpha", "a-1", 0, ""); got != nil || !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("DrainInstance = %v, %v; want ErrPermissionDenied", got, err)
	}
	client = startFakeAPI(t, &fakeTasks{}, &fakeAgents{err: status.Error(codes.FailedPrecondition, "instance go-1 is not connected")})
	if got, err := client.DrainInstance(testContext(t), "greeter", "go-1", 0, ""); got != nil || !errors.Is(err, ErrFailedPrecondition) {
		t.Errorf("DrainInstance of a disconnected instance = %v, %v; want ErrFailedPrecondition", got, err)
	}
	tasks := &fakeTasks{taskPages: threeTaskPages(), listErr: status.Error(codes.Unauthenticated, "token")}
	client = startFakeAPI(t, tasks, &fakeAgents{})
	if p, err := client.ListTasksPage(testContext(t), TaskFilter{}, 0, ""); p != nil || !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("ListTasksPage = %v, %v; want ErrUnauthenticated", p, err)
	}
}

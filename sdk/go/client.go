package meshplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// TaskState is the lifecycle state of a task.
type TaskState string

// Task states.
const (
	TaskQueued     TaskState = "QUEUED"
	TaskAssigned   TaskState = "ASSIGNED"
	TaskRunning    TaskState = "RUNNING"
	TaskSucceeded  TaskState = "SUCCEEDED"
	TaskFailed     TaskState = "FAILED"
	TaskCancelled  TaskState = "CANCELLED"
	TaskTimedOut   TaskState = "TIMED_OUT"
	TaskDeadLetter TaskState = "DEAD_LETTER"
)

// Terminal says whether the state is final.
func (s TaskState) Terminal() bool {
	switch s {
	case TaskSucceeded, TaskFailed, TaskCancelled, TaskTimedOut, TaskDeadLetter:
		return true
	}
	return false
}

func taskState(s pb.TaskState) TaskState {
	return TaskState(strings.TrimPrefix(s.String(), "TASK_STATE_"))
}

// ParseTaskState parses a task state name such as "SUCCEEDED" (any case; a "TASK_STATE_"
// prefix is accepted). An unknown name is an error matching ErrInvalidArgument.
func ParseTaskState(name string) (TaskState, error) {
	upper := strings.ToUpper(strings.TrimSpace(name))
	s := TaskState(strings.TrimPrefix(upper, "TASK_STATE_"))
	if s == "" {
		return "", fmt.Errorf("%w: unknown task state %q", ErrInvalidArgument, name)
	}
	if _, err := s.proto(); err != nil {
		return "", err
	}
	return s, nil
}

// proto is the wire enum of a state; "" is TASK_STATE_UNSPECIFIED (no state).
func (s TaskState) proto() (pb.TaskState, error) {
	if s == "" {
		return pb.TaskState_TASK_STATE_UNSPECIFIED, nil
	}
	v, ok := pb.TaskState_value["TASK_STATE_"+string(s)]
	if !ok || v == int32(pb.TaskState_TASK_STATE_UNSPECIFIED) {
		return 0, fmt.Errorf("%w: unknown task state %q", ErrInvalidArgument, string(s))
	}
	return pb.TaskState(v), nil
}

// ErrorInfo is a task's (or attempt's) error.
type ErrorInfo struct {
	Code      string
	Message   string
	Retryable bool
	Details   map[string]any
}

func errorInfo(e *pb.TaskError) *ErrorInfo {
	if e == nil {
		return nil
	}
	return &ErrorInfo{Code: e.GetCode(), Message: e.GetMessage(), Retryable: e.GetRetryable(), Details: e.GetDetails().AsMap()}
}

// AttemptInfo is one attempt of a task.
type AttemptInfo struct {
	Attempt    int
	AgentName  string
	InstanceID string
	// Outcome is RUNNING, SUCCEEDED, FAILED, TIMED_OUT, LOST or CANCELLED.
	Outcome                        string
	Error                          *ErrorInfo
	AssignTime, StartTime, EndTime time.Time
}

// TaskInfo is a task as the control plane stores it.
type TaskInfo struct {
	ID         string
	Capability string
	State      TaskState
	// Attempt is the current (or last) attempt number; 0 before the first assignment.
	Attempt int
	// Output is the output once SUCCEEDED: JSON unless OutputContentType says otherwise.
	Output            json.RawMessage
	OutputContentType string
	// Error is the last error (FAILED, DEAD_LETTER, TIMED_OUT, or a failed attempt awaiting retry).
	Error           *ErrorInfo
	Progress        float64
	ProgressMessage string
	CancelReason    string
	CorrelationID   string
	Metadata        map[string]string
	// ResubmittedFrom is the ended task this one was re-submitted from (Resubmit), if any.
	ResubmittedFrom string
	// Deduplicated is set only on what Submit and SubmitMany return: the idempotency key matched
	// an existing task, which is returned instead of a new one.
	Deduplicated bool
	Attempts     []AttemptInfo
	CreateTime   time.Time
	UpdateTime   time.Time
	EndTime      time.Time
}

// Decode decodes the JSON output into v.
func (t *TaskInfo) Decode(v any) error { return decodeJSON(t.Output, t.OutputContentType, v) }

func taskInfo(t *pb.Task) *TaskInfo {
	info := &TaskInfo{
		ID:              t.GetId(),
		Capability:      t.GetTarget().GetCapability(),
		State:           taskState(t.GetState()),
		Attempt:         int(t.GetAttempt()),
		Error:           errorInfo(t.GetError()),
		Progress:        float64(t.GetProgress()),
		ProgressMessage: t.GetProgressMessage(),
		CancelReason:    t.GetCancelReason(),
		CorrelationID:   t.GetCorrelationId(),
		Metadata:        t.GetMetadata(),
		ResubmittedFrom: t.GetResubmittedFrom(),
		CreateTime:      asTime(t.GetCreateTime()),
		UpdateTime:      asTime(t.GetUpdateTime()),
		EndTime:         asTime(t.GetEndTime()),
	}
	if t.GetOutput() != nil {
		info.Output, info.OutputContentType, _ = decodePayload(t.GetOutput())
	}
	for _, a := range t.GetAttempts() {
		info.Attempts = append(info.Attempts, AttemptInfo{
			Attempt:    int(a.GetAttempt()),
			AgentName:  a.GetAgentName(),
			InstanceID: a.GetAgentInstanceId(),
			Outcome:    strings.TrimPrefix(a.GetOutcome().String(), "ATTEMPT_OUTCOME_"),
			Error:      errorInfo(a.GetError()),
			AssignTime: asTime(a.GetAssignTime()),
			StartTime:  asTime(a.GetStartTime()),
			EndTime:    asTime(a.GetEndTime()),
		})
	}
	return info
}

// TaskEventType says what happened to a task.
type TaskEventType string

// Task event types.
const (
	EventCreated      TaskEventType = "CREATED"
	EventAssigned     TaskEventType = "ASSIGNED"
	EventStarted      TaskEventType = "STARTED"
	EventProgress     TaskEventType = "PROGRESS"
	EventRetrying     TaskEventType = "RETRYING"
	EventSucceeded    TaskEventType = "SUCCEEDED"
	EventFailed       TaskEventType = "FAILED"
	EventCancelled    TaskEventType = "CANCELLED"
	EventTimedOut     TaskEventType = "TIMED_OUT"
	EventDeadLettered TaskEventType = "DEAD_LETTERED"
)

// TaskEvent is one entry of a task's history.
type TaskEvent struct {
	TaskID     string
	Sequence   int64
	Type       TaskEventType
	State      TaskState
	Attempt    int
	Time       time.Time
	InstanceID string
	Progress   float64
	Message    string
	Error      *ErrorInfo
	Output     json.RawMessage
	// Actor is who caused the event, as the audit trail names callers ("client/<principal>",
	// "system/timeouts", ...); "" for the plane's own steps.
	Actor string
}

func taskEvent(e *pb.TaskEvent) TaskEvent {
	ev := TaskEvent{
		TaskID:     e.GetTaskId(),
		Sequence:   e.GetSequence(),
		Type:       TaskEventType(strings.TrimPrefix(e.GetType().String(), "TASK_EVENT_TYPE_")),
		State:      taskState(e.GetState()),
		Attempt:    int(e.GetAttempt()),
		Time:       asTime(e.GetTime()),
		InstanceID: e.GetAgentInstanceId(),
		Progress:   float64(e.GetProgress()),
		Message:    e.GetMessage(),
		Error:      errorInfo(e.GetError()),
		Actor:      e.GetActor(),
	}
	if e.GetOutput() != nil {
		ev.Output, _, _ = decodePayload(e.GetOutput())
	}
	return ev
}

// SubmitOption tunes a submitted task.
type SubmitOption func(*pb.SubmitTaskRequest)

// WithIdempotencyKey makes the submission idempotent: the same key returns the same task.
func WithIdempotencyKey(key string) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { r.IdempotencyKey = key }
}

// WithPriority sets the priority (-1000..1000; higher runs first).
func WithPriority(priority int) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { r.Priority = int32Field(priority) }
}

// WithCorrelationID sets the correlation id carried to agents, logs and events.
func WithCorrelationID(id string) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { r.CorrelationId = id }
}

// WithMetadata sets free-form metadata carried to the agent.
func WithMetadata(metadata map[string]string) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { r.Metadata = metadata }
}

// WithAgentName runs the task only on agents with this name.
func WithAgentName(name string) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { r.Target.AgentName = name }
}

// WithLabelSelector runs the task only on agent instances carrying all these labels.
func WithLabelSelector(labels map[string]string) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { r.Target.LabelSelector = labels }
}

// WithRoutingKey sets the key of consistent-hash (sticky) placement.
func WithRoutingKey(key string) SubmitOption {
	return func(r *pb.SubmitTaskRequest) {
		r.Target.RoutingKey = key
		r.Target.Strategy = pb.SchedulingStrategy_SCHEDULING_STRATEGY_CONSISTENT_HASH
	}
}

// WithMaxAttempts sets the attempts allowed, the first included (1: no retry).
func WithMaxAttempts(n int) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { retryPolicy(r).MaxAttempts = int32Field(n) }
}

// WithRetryBackoff sets the backoff between attempts: initial, growing by multiplier up to max.
func WithRetryBackoff(initial, max time.Duration, multiplier float64) SubmitOption {
	return func(r *pb.SubmitTaskRequest) {
		p := retryPolicy(r)
		p.InitialBackoff, p.MaxBackoff, p.BackoffMultiplier = durationpb.New(initial), durationpb.New(max), multiplier
	}
}

// WithNonRetryableCodes lists error codes that end the task FAILED at once.
func WithNonRetryableCodes(codes ...string) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { retryPolicy(r).NonRetryableErrorCodes = codes }
}

// WithStartToClose bounds one attempt once assigned.
func WithStartToClose(d time.Duration) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { timeouts(r).StartToClose = durationpb.New(d) }
}

// WithScheduleToStart bounds the wait in the queue before an attempt starts.
func WithScheduleToStart(d time.Duration) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { timeouts(r).ScheduleToStart = durationpb.New(d) }
}

// WithScheduleToClose bounds the whole task, from submission to a terminal state.
func WithScheduleToClose(d time.Duration) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { timeouts(r).ScheduleToClose = durationpb.New(d) }
}

// WithHeartbeatTimeout fails an attempt whose agent reports no progress or heartbeat for d.
func WithHeartbeatTimeout(d time.Duration) SubmitOption {
	return func(r *pb.SubmitTaskRequest) { timeouts(r).Heartbeat = durationpb.New(d) }
}

func retryPolicy(r *pb.SubmitTaskRequest) *pb.RetryPolicy {
	if r.RetryPolicy == nil {
		r.RetryPolicy = &pb.RetryPolicy{}
	}
	return r.RetryPolicy
}

func timeouts(r *pb.SubmitTaskRequest) *pb.TaskTimeouts {
	if r.Timeouts == nil {
		r.Timeouts = &pb.TaskTimeouts{}
	}
	return r.Timeouts
}

// Client uses the mesh: submit (one by one or in batches), list, inspect, wait for and cancel
// tasks; list agents and their instances; publish to, subscribe to and list channels; read and
// write state; read the audit trail. It is safe for concurrent use.
type Client struct {
	conns    *connPool
	tasks    pb.TaskServiceClient
	channels pb.ChannelServiceClient
	agents   pb.AgentServiceClient
	state    pb.StateServiceClient
	audit    pb.AuditServiceClient
}

// NewClient returns a client of the control plane at target: host:port, any target grpc-go
// resolves, or a list of addresses as gRPC's naming doc writes it ("ipv4:10.0.0.1:50051,10.0.0.2:50051",
// "ipv6:[::1]:50051,[::2]:50051"; over TLS without a server name, the first address is the name
// verified), as [Agent.Run] takes. Of several addresses (a list, or a DNS name with several),
// calls go to each ready one in turn (round_robin). An empty target means
// the MESHPLANE_TARGET environment variable, or [DefaultTarget] (127.0.0.1:50051) when that is
// not set either. Without [WithToken], the MESHPLANE_TOKEN environment variable is the bearer
// token, when it is set. Connections are made lazily, on the first call (see [WithConnections]
// for more than one). They are plaintext unless [WithTLS] or the MESHPLANE_TLS* environment
// variables ask for TLS.
func NewClient(target string, opts ...ClientOption) (*Client, error) {
	cfg := clientConfig{connections: 1}
	for _, opt := range opts {
		opt.applyClient(&cfg)
	}
	if cfg.connections < 1 || cfg.connections > maxConnections {
		return nil, invalidArgument(fmt.Errorf("meshplane: connections must be between 1 and %d, got %d", maxConnections, cfg.connections))
	}
	target = resolveTarget(target)
	if err := checkTarget(target); err != nil {
		return nil, invalidArgument(err)
	}
	token, err := resolveToken(cfg.token, cfg.tokenSet)
	if err != nil {
		return nil, err
	}
	transport, err := transportCredentials(cfg.tls, slog.Default())
	if err != nil {
		return nil, err
	}
	options := append(targetDialOptions(), cfg.dialOptions...) // as an agent's: address lists, round_robin
	conns, err := dialPool(cfg.connections, func() (*grpc.ClientConn, error) {
		return dial(target, token, transport.credentials(), DefaultBackoffMax, false, options)
	})
	if err != nil {
		return nil, err
	}
	return &Client{
		conns:    conns,
		tasks:    pb.NewTaskServiceClient(conns),
		channels: pb.NewChannelServiceClient(conns),
		agents:   pb.NewAgentServiceClient(conns),
		state:    pb.NewStateServiceClient(conns),
		audit:    pb.NewAuditServiceClient(conns),
	}, nil
}

// Close closes the connections.
func (c *Client) Close() error { return c.conns.Close() }

// Submit submits a task for capability with input (JSON-encoded; a [Blob] is sent as bytes).
// With an idempotency key already used, it returns the existing task with Deduplicated set; the
// key given with another target, input or priority is an error matching ErrFailedPrecondition. An
// input that does not encode is an error matching ErrInvalidArgument (nothing is sent).
func (c *Client) Submit(ctx context.Context, capability string, input any, opts ...SubmitOption) (*TaskInfo, error) {
	req, err := NewTaskRequest(capability, input, opts...).proto()
	if err != nil {
		return nil, err
	}
	resp, err := c.tasks.SubmitTask(ctx, req)
	if err != nil {
		return nil, rpcError(err)
	}
	task := taskInfo(resp.GetTask())
	task.Deduplicated = resp.GetDeduplicated()
	return task, nil
}

// MaxSubmitBatch is the most tasks one SubmitMany call may carry.
const MaxSubmitBatch = 1000

// TaskRequest describes one task of a batch for SubmitMany: what Submit takes as arguments.
type TaskRequest struct {
	// Capability is the capability to run.
	Capability string
	// Input is the task input (JSON-encoded; a [Blob] is sent as bytes).
	Input any
	// Options tune the task, as they do in Submit.
	Options []SubmitOption
}

// NewTaskRequest describes a task for SubmitMany with Submit's arguments.
func NewTaskRequest(capability string, input any, opts ...SubmitOption) TaskRequest {
	return TaskRequest{Capability: capability, Input: input, Options: opts}
}

func (r TaskRequest) proto() (*pb.SubmitTaskRequest, error) {
	payload, err := encodePayload(r.Input)
	if err != nil {
		return nil, invalidArgument(err)
	}
	req := &pb.SubmitTaskRequest{Target: &pb.TaskTarget{Capability: r.Capability}, Input: payload}
	for _, opt := range r.Options {
		opt(req)
	}
	return req, nil
}

// SubmitMany submits up to [MaxSubmitBatch] tasks in one call, atomically: either all are
// accepted or none is (the error says why). It returns the tasks in request order; a task whose
// idempotency key matched an existing task is that task, with Deduplicated set.
func (c *Client) SubmitMany(ctx context.Context, requests []TaskRequest) ([]*TaskInfo, error) {
	batch := &pb.BatchSubmitTasksRequest{Requests: make([]*pb.SubmitTaskRequest, len(requests))}
	for i, r := range requests {
		req, err := r.proto()
		if err != nil {
			return nil, fmt.Errorf("%w (task %d of the batch)", err, i)
		}
		batch.Requests[i] = req
	}
	resp, err := c.tasks.BatchSubmitTasks(ctx, batch)
	if err != nil {
		return nil, rpcError(err)
	}
	if len(resp.GetTasks()) != len(requests) {
		return nil, fmt.Errorf("meshplane: BatchSubmitTasks returned %d tasks for %d requests", len(resp.GetTasks()), len(requests))
	}
	dedup := resp.GetDeduplicated()
	tasks := make([]*TaskInfo, len(requests))
	for i, t := range resp.GetTasks() {
		tasks[i] = taskInfo(t)
		tasks[i].Deduplicated = i < len(dedup) && dedup[i]
	}
	return tasks, nil
}

// Get returns a task with its attempts (an error matching ErrNotFound if there is none).
func (c *Client) Get(ctx context.Context, taskID string) (*TaskInfo, error) {
	resp, err := c.tasks.GetTask(ctx, &pb.GetTaskRequest{TaskId: taskID})
	if err != nil {
		return nil, rpcError(err)
	}
	return taskInfo(resp.GetTask()), nil
}

// Cancel cancels a task and returns it; cancelling a task that already ended fails with an
// error matching ErrFailedPrecondition. reason (at most 1000 characters, may be "") is recorded
// on the task, and the handler running it sees it as [Task.CancelMessage].
func (c *Client) Cancel(ctx context.Context, taskID, reason string) (*TaskInfo, error) {
	resp, err := c.tasks.CancelTask(ctx, &pb.CancelTaskRequest{TaskId: taskID, Reason: reason})
	if err != nil {
		return nil, rpcError(err)
	}
	return taskInfo(resp.GetTask()), nil
}

// Resubmit submits a new task with the spec of an ended one (a dead-lettered task, say) and returns
// the new task; a task not yet ended fails with an error matching ErrFailedPrecondition.
func (c *Client) Resubmit(ctx context.Context, taskID string) (*TaskInfo, error) {
	resp, err := c.tasks.ResubmitTask(ctx, &pb.ResubmitTaskRequest{TaskId: taskID})
	if err != nil {
		return nil, rpcError(err)
	}
	return taskInfo(resp.GetTask()), nil
}

// TaskFilter selects tasks to list; zero fields match every task.
type TaskFilter struct {
	// State: only tasks in this state.
	State TaskState
	// Capability: only tasks for this capability.
	Capability string
	// CorrelationID: only tasks with this correlation id.
	CorrelationID string
}

// TaskPage is one page of a task listing.
type TaskPage struct {
	// Tasks are the page's tasks, newest first, without their attempts (Get has them).
	Tasks []*TaskInfo
	// NextPageToken asks ListTasksPage for the next page; empty on the last page.
	NextPageToken string
}

// ListTasksPage returns one page of the tasks matching filter, newest first. pageSize is the most
// tasks on the page (0: the control plane's default, 50; at most 1000); pageToken is "" for the
// first page, then the previous page's NextPageToken, with the same filter. A filter State that
// is not a known state is an error matching ErrInvalidArgument.
func (c *Client) ListTasksPage(ctx context.Context, filter TaskFilter, pageSize int, pageToken string) (*TaskPage, error) {
	state, err := filter.State.proto()
	if err != nil {
		return nil, err
	}
	resp, err := c.tasks.ListTasks(ctx, &pb.ListTasksRequest{
		PageSize:      int32Field(pageSize),
		PageToken:     pageToken,
		State:         state,
		Capability:    filter.Capability,
		CorrelationId: filter.CorrelationID,
	})
	if err != nil {
		return nil, rpcError(err)
	}
	return &TaskPage{Tasks: convertAll(resp.GetTasks(), taskInfo), NextPageToken: resp.GetNextPageToken()}, nil
}

// ListTasks iterates over every task matching filter, newest first (without their attempts),
// fetching pages of the control plane's default size with ListTasksPage as the loop goes on. A
// failed call ends the iteration with (nil, err); stopping the loop early fetches no more pages.
//
//	for task, err := range client.ListTasks(ctx, meshplane.TaskFilter{State: meshplane.TaskFailed}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(task.ID, task.Error)
//	}
func (c *Client) ListTasks(ctx context.Context, filter TaskFilter) iter.Seq2[*TaskInfo, error] {
	return func(yield func(*TaskInfo, error) bool) {
		token := ""
		for {
			page, err := c.ListTasksPage(ctx, filter, 0, token)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, t := range page.Tasks {
				if !yield(t, nil) {
					return
				}
			}
			if token = page.NextPageToken; token == "" {
				return
			}
		}
	}
}

// Watch calls fn with a task's events (its history, then live ones) until the task ends, fn
// returns an error, or ctx is done. A broken stream is resumed after the last event seen.
func (c *Client) Watch(ctx context.Context, taskID string, fn func(TaskEvent) error) error {
	var after int64
	bo := newBackoff(DefaultBackoffInitial, 2*time.Second)
	for {
		ended, err := c.watchOnce(ctx, taskID, &after, fn)
		if ended || err == nil {
			return err
		}
		var rpc *RPCError
		if !errors.As(err, &rpc) || rpc.Code != codes.Unavailable {
			return err
		}
		timer := time.NewTimer(bo.Next())
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// watchOnce follows one WatchTask stream; ended says the task's terminal event was seen (or
// fn stopped the watch).
func (c *Client) watchOnce(ctx context.Context, taskID string, after *int64, fn func(TaskEvent) error) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.tasks.WatchTask(ctx, &pb.WatchTaskRequest{TaskId: taskID, AfterSequence: *after})
	if err != nil {
		return false, rpcError(err)
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return false, rpcError(err)
		}
		ev := taskEvent(resp.GetEvent())
		*after = max(*after, ev.Sequence)
		if err := fn(ev); err != nil {
			return true, err
		}
		if ev.State.Terminal() {
			return true, nil
		}
	}
}

// Wait waits until the task ends and returns it. A task that did not succeed is returned with a
// *TaskFailedError (errors.Is ErrTaskFailed, and ErrTaskCancelled / ErrTaskTimedOut /
// ErrTaskDeadLettered by its final state).
//
// Wait rides out control plane restarts: the watch resumes after a broken stream, and the
// task's final record is read again while the plane is unavailable (it may be restarting right
// after the task ended), until ctx is done. When ctx has a deadline too near for another try,
// Wait returns the last error matching ErrUnavailable.
func (c *Client) Wait(ctx context.Context, taskID string) (*TaskInfo, error) {
	if err := c.Watch(ctx, taskID, func(TaskEvent) error { return nil }); err != nil {
		return nil, err
	}
	task, err := c.finalRecord(ctx, taskID)
	if err != nil {
		return nil, err
	}
	if task.State != TaskSucceeded {
		return task, &TaskFailedError{Task: task}
	}
	return task, nil
}

// finalRecord reads an ended task, again while the plane is unavailable, with the backoff of
// Watch, until ctx is done. As in the Python SDK, when the next try would come after ctx's
// deadline, the last unavailable error is returned rather than the deadline's.
func (c *Client) finalRecord(ctx context.Context, taskID string) (*TaskInfo, error) {
	bo := newBackoff(DefaultBackoffInitial, 2*time.Second)
	for {
		task, err := c.Get(ctx, taskID)
		if err == nil || !errors.Is(err, ErrUnavailable) {
			return task, err
		}
		delay := bo.Next()
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= delay {
			return nil, err
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
	}
}

// Run submits a task and waits for it (see Submit and Wait).
func (c *Client) Run(ctx context.Context, capability string, input any, opts ...SubmitOption) (*TaskInfo, error) {
	task, err := c.Submit(ctx, capability, input, opts...)
	if err != nil {
		return nil, err
	}
	return c.Wait(ctx, task.ID)
}

// Publish broadcasts v (JSON, or a [Blob]) on a channel to every current subscriber. A bad
// channel name or a value that does not encode is an error matching ErrInvalidArgument
// (nothing is sent).
func (c *Client) Publish(ctx context.Context, channel string, v any) error {
	return c.PublishWithHeaders(ctx, channel, v, nil)
}

// PublishWithHeaders is Publish with message headers.
func (c *Client) PublishWithHeaders(ctx context.Context, channel string, v any, headers map[string]string) error {
	if err := validChannel(channel); err != nil {
		return err
	}
	payload, err := encodePayload(v)
	if err != nil {
		return invalidArgument(err)
	}
	_, err = c.channels.Publish(ctx, &pb.PublishRequest{Channel: channel, Payload: payload, Headers: headers})
	return rpcError(err)
}

// Subscribe calls fn with every message published on channel from when the subscription is
// live until ctx is done or fn returns an error; it returns that error (ctx's, or fn's), or the
// reason the subscription failed or ended: a bad channel name (matching ErrInvalidArgument,
// checked before anything is sent), the control plane unavailable (ErrUnavailable), ...
//
// ready, if not nil, is closed when the subscription is live, and in any case by the time
// Subscribe returns (it failed first): a receive from ready never blocks forever. It says
// "go on", not "live": Subscribe's result says whether it failed, so keep it:
//
//	ready, errc := make(chan struct{}), make(chan error, 1)
//	go func() { errc <- client.Subscribe(ctx, "orders", ready, handle) }()
//	<-ready // live, or Subscribe failed and its error is on its way to errc
func (c *Client) Subscribe(ctx context.Context, channel string, ready chan<- struct{}, fn func(*Message) error) error {
	defer func() {
		if ready != nil {
			close(ready) // never went live: unblock whoever waits on it
		}
	}()
	if err := validChannel(channel); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.channels.Subscribe(ctx, &pb.SubscribeRequest{Channel: channel})
	if err != nil {
		return rpcError(err)
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return rpcError(err)
		}
		switch ev := resp.GetEvent().(type) {
		case *pb.SubscribeResponse_Started:
			if ready != nil {
				close(ready)
				ready = nil
			}
		case *pb.SubscribeResponse_Message:
			if err := fn(message(ev.Message)); err != nil {
				return err
			}
		}
	}
}

// ChannelInfo is a channel in use: published to or subscribed to within the channel retention.
type ChannelInfo struct {
	Name string
	// CreateTime is its first use. LastUseTime is its last publish, or the last time a subscriber
	// was seen on it; the control plane refreshes it at most once an hour, so it may be up to an
	// hour old.
	CreateTime  time.Time
	LastUseTime time.Time
}

func channelInfo(ch *pb.Channel) *ChannelInfo {
	return &ChannelInfo{Name: ch.GetName(), CreateTime: asTime(ch.GetCreateTime()), LastUseTime: asTime(ch.GetLastUseTime())}
}

// ChannelPage is one page of a channel listing.
type ChannelPage struct {
	// Channels are the page's channels, by name.
	Channels []*ChannelInfo
	// NextPageToken asks ListChannelsPage for the next page; empty on the last page.
	NextPageToken string
}

// ListChannelsPage returns one page of the channels in use (published to or subscribed to within
// the channel retention), by name. pageSize is the most channels on the page (0: the control
// plane's default, 50; at most 1000); pageToken is "" for the first page, then the previous page's
// NextPageToken.
func (c *Client) ListChannelsPage(ctx context.Context, pageSize int, pageToken string) (*ChannelPage, error) {
	resp, err := c.channels.ListChannels(ctx, &pb.ListChannelsRequest{PageSize: int32Field(pageSize), PageToken: pageToken})
	if err != nil {
		return nil, rpcError(err)
	}
	return &ChannelPage{Channels: convertAll(resp.GetChannels(), channelInfo), NextPageToken: resp.GetNextPageToken()}, nil
}

// ListChannels returns every channel in use, by name; it follows the pages to the end with
// ListChannelsPage.
func (c *Client) ListChannels(ctx context.Context) ([]*ChannelInfo, error) {
	return allPages(func(token string) ([]*ChannelInfo, string, error) {
		page, err := c.ListChannelsPage(ctx, listPageSize, token)
		if err != nil {
			return nil, "", err
		}
		return page.Channels, page.NextPageToken, nil
	})
}

// State is key/value state in a namespace (an agent's namespace is its name).
func (c *Client) State(namespace string) *State {
	return &State{namespace: namespace, client: func() (pb.StateServiceClient, error) { return c.state, nil }}
}

// DrainInstance asks a connected agent instance to finish its in-flight work, take no more,
// and reconnect (timeout 0: the control plane's default), and returns the instance, now
// draining. An instance that is not connected fails with an error matching ErrFailedPrecondition.
func (c *Client) DrainInstance(ctx context.Context, agentName, instanceID string, timeout time.Duration, reason string) (*InstanceInfo, error) {
	req := &pb.DrainAgentInstanceRequest{AgentName: agentName, InstanceId: instanceID, Reason: reason}
	if timeout > 0 {
		req.Timeout = durationpb.New(timeout)
	}
	resp, err := c.agents.DrainAgentInstance(ctx, req)
	if err != nil {
		return nil, rpcError(err)
	}
	return instanceInfo(resp.GetInstance()), nil
}

package meshplane

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// HandlerFunc runs one attempt of a task. ctx is cancelled when the control plane cancels
// the attempt (a client cancelled the task, it timed out, ...) or its deadline passes; the
// handler should then return soon (what it returns no longer matters: the SDK reports the
// cancellation). The returned value is the task's output (JSON-encoded; a [Blob] is sent as
// bytes); a returned error fails the attempt (see [TaskError]).
type HandlerFunc func(ctx context.Context, t *Task) (any, error)

// Typed adapts a handler taking a decoded input of type In. Input that does not decode into
// In fails the attempt with the non-retryable code "validation_failed".
func Typed[In, Out any](fn func(ctx context.Context, t *Task, in In) (Out, error)) HandlerFunc {
	return func(ctx context.Context, t *Task) (any, error) {
		var in In
		if err := t.Decode(&in); err != nil {
			return nil, err
		}
		return fn(ctx, t, in)
	}
}

// Task is one attempt of a task, as its handler sees it.
type Task struct {
	// ID is the task id.
	ID string
	// Attempt is the attempt number, from 1.
	Attempt int
	// MaxAttempts is the task's max_attempts.
	MaxAttempts int
	// Capability is the capability being run.
	Capability string
	// Input is the task input: JSON unless ContentType says otherwise.
	Input json.RawMessage
	// ContentType is the input's MIME type (application/json for JSON).
	ContentType string
	// Priority is the task's priority.
	Priority int
	// CorrelationID is the submitter's correlation id.
	CorrelationID string
	// Metadata is the task's metadata.
	Metadata map[string]string
	// Deadline is when this attempt must be done (zero if none).
	Deadline time.Time
	// HeartbeatTimeout: send Progress or Heartbeat at least this often (0: not required).
	HeartbeatTimeout time.Duration
	// Traceparent and Tracestate are the submitter's W3C trace context.
	Traceparent, Tracestate string

	rt     *runtime
	ref    ref
	logger *slog.Logger
	ctx    context.Context
}

func newTask(rt *runtime, a *pb.Assignment, ctx context.Context) *Task {
	data, ct, err := decodePayload(a.GetInput())
	if err != nil {
		data, ct = nil, "application/octet-stream"
	}
	t := &Task{
		ID:               a.GetTaskId(),
		Attempt:          int(a.GetAttempt()),
		MaxAttempts:      int(a.GetMaxAttempts()),
		Capability:       a.GetCapability(),
		Input:            data,
		ContentType:      ct,
		Priority:         int(a.GetPriority()),
		CorrelationID:    a.GetCorrelationId(),
		Metadata:         a.GetMetadata(),
		HeartbeatTimeout: a.GetHeartbeatTimeout().AsDuration(),
		Traceparent:      a.GetTraceparent(),
		Tracestate:       a.GetTracestate(),
		rt:               rt,
		ref:              refOf(a.GetTaskId(), a.GetAttempt()),
		ctx:              ctx,
	}
	if a.GetDeadline() != nil {
		t.Deadline = a.GetDeadline().AsTime()
	}
	if t.Metadata == nil {
		t.Metadata = map[string]string{}
	}
	t.logger = rt.log.With("task_id", t.ID, "attempt", t.Attempt, "capability", t.Capability)
	return t
}

// Decode decodes the JSON input into v. On failure it returns a non-retryable *TaskError with
// code "validation_failed", which the handler can return as it is.
func (t *Task) Decode(v any) error {
	if err := decodeJSON(t.Input, t.ContentType, v); err != nil {
		return &TaskError{Code: CodeValidationFailed, Message: "input does not decode: " + err.Error(), Err: err}
	}
	return nil
}

// Progress reports progress (fraction in 0..1) with a message. It also counts as a heartbeat.
//
// A fraction outside 0..1 (or NaN) is a bug in the caller, which the Python and TypeScript SDKs
// raise: Progress has no error to return, so it reports no progress then, logs a warning on the
// task's logger and sends only the heartbeat (it does not clamp the value into range).
func (t *Task) Progress(fraction float64, message string) {
	if !(fraction >= 0 && fraction <= 1) { // NaN fails this too
		t.logger.Warn("meshplane: progress not reported: the fraction must be within 0..1",
			"fraction", fraction, "message", message)
		t.Heartbeat()
		return
	}
	t.rt.update(t.ref, &pb.TaskUpdate{
		TaskId: t.ref.taskID, Attempt: t.ref.attempt,
		Kind:     pb.TaskUpdateKind_TASK_UPDATE_KIND_PROGRESS,
		Progress: float32(fraction), Message: message,
	})
}

// Heartbeat says the attempt is alive (resets its heartbeat timeout, if it has one).
func (t *Task) Heartbeat() {
	t.rt.update(t.ref, &pb.TaskUpdate{
		TaskId: t.ref.taskID, Attempt: t.ref.attempt, Kind: pb.TaskUpdateKind_TASK_UPDATE_KIND_HEARTBEAT,
	})
}

// Publish broadcasts v (JSON, or a [Blob]) on a channel, through the agent's stream. What the
// control plane would refuse is refused here, before anything is sent (the plane's own answer could
// not reach the caller): a channel name or a value it does not take (JSON nested more than 32
// levels deep among them) fails with an error matching [ErrInvalidArgument], a payload over its
// max_payload_bytes with one matching [ErrResourceExhausted].
func (t *Task) Publish(channel string, v any) error {
	return t.rt.publish(channel, v, nil)
}

// State is the agent's key/value state (namespace: the agent's name).
func (t *Task) State() *State { return t.rt.agent.State() }

// Logger is the agent's logger with the task id, attempt and capability attached.
func (t *Task) Logger() *slog.Logger { return t.logger }

// CancelReason says why the attempt was cancelled ("cancelled", "timed_out", "not_held",
// "deadline_exceeded", "agent_stopped"), or "" while it was not.
func (t *Task) CancelReason() string { return t.rt.cancelReason(t.ref) }

// CancelMessage is the reason the client gave when it cancelled the task (the reason argument
// of [Client.Cancel]), in its own words. It is "" when the client gave none, while the attempt
// was not cancelled, and when the cancellation is not a client's (a timeout, the deadline, the
// agent stopping). It is set by the time the handler's ctx is done.
func (t *Task) CancelMessage() string { return t.rt.cancelMessage(t.ref) }

// Context is the attempt's context (the one passed to the handler).
func (t *Task) Context() context.Context { return t.ctx }

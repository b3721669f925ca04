package meshplane

import (
	"errors"
	"fmt"
	"reflect"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Codes the SDK itself puts in task errors (docs/agent-link.md, "SDK error conventions").
const (
	CodeCancelled          = "cancelled"
	CodeDeadlineExceeded   = "deadline_exceeded"
	CodeValidationFailed   = "validation_failed"
	CodeUnknownCapability  = "unknown_capability"
	CodePanic              = "panic"
	CodeOutputNotEncodable = "output_not_serializable"
	CodeOutputTooLarge     = "output_too_large" // over the plane's max_payload_bytes: not sent
	CodeAgentStopped       = "agent_stopped"
	codeFallback           = "Error"
)

// TaskError is how a handler fails an attempt with a chosen code, message and retry decision.
//
// Return one from a handler (directly or wrapped): the attempt fails with its Code, Message
// and Retryable flag. Any other error fails the attempt as retryable, with the name of the
// error's type as its code (see [ErrorCode]). A non-retryable error ends the task FAILED at
// once; a retryable one is retried while the task's retry policy allows.
type TaskError struct {
	// Code is a stable, machine-readable code, e.g. "OutOfStock". Empty means "Error".
	Code string
	// Message is for people.
	Message string
	// Retryable says whether another attempt may succeed.
	Retryable bool
	// Details are free-form structured details (JSON-encodable values).
	Details map[string]any
	// Err is the underlying cause, if any (reachable with errors.Is/As).
	Err error
}

// NonRetryable returns a task error that ends the task FAILED at once.
func NonRetryable(code, message string) *TaskError {
	return &TaskError{Code: code, Message: message}
}

// Retryable returns a task error that lets the control plane retry the task.
func Retryable(code, message string) *TaskError {
	return &TaskError{Code: code, Message: message, Retryable: true}
}

// Permanent wraps an ordinary error as a non-retryable task error, keeping the code it would
// have had (see [ErrorCode]) and its message. Permanent(nil) is nil.
func Permanent(err error) *TaskError {
	if err == nil {
		return nil
	}
	return &TaskError{Code: ErrorCode(err), Message: err.Error(), Err: err}
}

// WithDetails returns a copy of e carrying details.
func (e *TaskError) WithDetails(details map[string]any) *TaskError {
	c := *e
	c.Details = details
	return &c
}

func (e *TaskError) Error() string {
	code := e.Code
	if code == "" {
		code = codeFallback
	}
	if e.Message == "" {
		return code
	}
	return code + ": " + e.Message
}

// Unwrap returns the underlying cause.
func (e *TaskError) Unwrap() error { return e.Err }

// ErrorCode is the task error code an error from a handler is reported with:
//   - the Code of a [*TaskError] in its chain;
//   - else the result of an ErrorCode() string method of an error in its chain;
//   - else the name of the first exported error type in its chain (e.g. "PathError" for a
//     *fs.PathError, or "Flaky" for a `type Flaky struct{...}` error);
//   - else "Error".
func ErrorCode(err error) string {
	var te *TaskError
	if errors.As(err, &te) && te.Code != "" {
		return te.Code
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if c, ok := e.(interface{ ErrorCode() string }); ok && c.ErrorCode() != "" {
			return c.ErrorCode()
		}
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if name := typeName(e); isExported(name) {
			return name
		}
	}
	return codeFallback
}

// toTaskError maps whatever a handler returned to the error it is reported with.
func toTaskError(err error) *TaskError {
	var te *TaskError
	if errors.As(err, &te) {
		if te.Code == "" {
			c := *te
			c.Code = codeFallback
			return &c
		}
		return te
	}
	return &TaskError{Code: ErrorCode(err), Message: err.Error(), Retryable: true, Err: err}
}

func typeName(v any) string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return ""
	}
	return t.Name()
}

func isExported(name string) bool {
	r, _ := utf8.DecodeRuneInString(name)
	return name != "" && unicode.IsUpper(r)
}

// ErrAttemptCancelled matches (errors.Is) the cause (context.Cause) of a handler's context when
// the control plane cancelled the attempt, or the agent gave it up because it is leaving; the
// error says why (a client cancelled the task, it timed out, the attempt is no longer held, the
// agent stopped), followed by the client's own reason when it gave one (see [Task.CancelMessage]).
var ErrAttemptCancelled = errors.New("meshplane: task attempt cancelled")

// The cancel reason of attempts given up because the agent is leaving.
const reasonAgentStopped = "agent_stopped"

type cancelCause struct {
	reason  string // the code: "cancelled", "timed_out", ...
	message string // the client's words to CancelTask, if any
}

func (c *cancelCause) Error() string {
	if c.message != "" {
		return ErrAttemptCancelled.Error() + " (" + c.reason + "): " + c.message
	}
	return ErrAttemptCancelled.Error() + " (" + c.reason + ")"
}

func (c *cancelCause) Is(target error) bool { return target == ErrAttemptCancelled }

// RegistrationError: the control plane refused the agent's registration (a bad name,
// capability, limit, ...). Run returns it: no reconnect can fix it.
type RegistrationError struct {
	Message string
	Field   string
}

func (e *RegistrationError) Error() string {
	if e.Field == "" {
		return "meshplane: registration rejected: " + e.Message
	}
	return fmt.Sprintf("meshplane: registration rejected: %s (field %s)", e.Message, e.Field)
}

// ErrInstanceIDTaken matches (errors.Is) the [*InstanceIDTakenError] Run returns when another
// agent registered this agent's instance ID.
var ErrInstanceIDTaken = errors.New("meshplane: instance ID taken by another agent")

// InstanceIDTakenError: the control plane replaced this agent's session because another agent
// registered the same instance ID (two processes configured with one [WithInstanceID]). Run
// returns it instead of reconnecting: a reconnect would take the session back from the other
// agent, which would do the same, and both would flap for good. Give each process its own ID.
type InstanceIDTakenError struct {
	InstanceID string
	Message    string // the control plane's explanation
}

func (e *InstanceIDTakenError) Error() string {
	return fmt.Sprintf("meshplane: instance_id %q is taken by another agent: %s", e.InstanceID, e.Message)
}

// Is matches ErrInstanceIDTaken.
func (e *InstanceIDTakenError) Is(target error) bool { return target == ErrInstanceIDTaken }

// RPCError is a failed call to the control plane. Match kinds with errors.Is against the
// sentinels ([ErrNotFound], [ErrFailedPrecondition], ...) or read Code.
type RPCError struct {
	Code     codes.Code
	Message  string
	Err      error
	sentinel bool
}

func (e *RPCError) Error() string {
	if e.sentinel {
		return "meshplane: " + e.Message
	}
	return fmt.Sprintf("meshplane: %s: %s", e.Code, e.Message)
}

// Unwrap returns the gRPC status error.
func (e *RPCError) Unwrap() error { return e.Err }

// Is matches the sentinel of the same code.
func (e *RPCError) Is(target error) bool {
	t, ok := target.(*RPCError)
	return ok && t.sentinel && t.Code == e.Code
}

func sentinel(code codes.Code, message string) *RPCError {
	return &RPCError{Code: code, Message: message, sentinel: true}
}

// Sentinels for errors.Is on errors returned by control plane calls.
var (
	ErrNotFound           error = sentinel(codes.NotFound, "not found")
	ErrAlreadyExists      error = sentinel(codes.AlreadyExists, "already exists")
	ErrInvalidArgument    error = sentinel(codes.InvalidArgument, "invalid argument")
	ErrFailedPrecondition error = sentinel(codes.FailedPrecondition, "failed precondition")
	ErrResourceExhausted  error = sentinel(codes.ResourceExhausted, "resource exhausted")
	ErrUnauthenticated    error = sentinel(codes.Unauthenticated, "unauthenticated")
	ErrPermissionDenied   error = sentinel(codes.PermissionDenied, "permission denied")
	ErrUnavailable        error = sentinel(codes.Unavailable, "control plane unavailable")
)

// invalidArgument marks an error the SDK found in a call's arguments before sending anything (a bad
// channel name, a value that does not encode, a negative TTL, ...) so that it matches
// ErrInvalidArgument, as the control plane's own INVALID_ARGUMENT answers do. Its message is err's;
// errors.Is and errors.As still reach err. invalidArgument(nil) is nil.
func invalidArgument(err error) error { return refusedAs(err, ErrInvalidArgument) }

// resourceExhausted is invalidArgument for a limit the SDK found exceeded before sending anything (a
// payload over the plane's max_payload_bytes): the error matches ErrResourceExhausted.
func resourceExhausted(err error) error { return refusedAs(err, ErrResourceExhausted) }

func refusedAs(err, kind error) error {
	if err == nil || errors.Is(err, kind) {
		return err
	}
	return &refusedError{err: err, kind: kind}
}

// refusedError is a call the SDK refused before sending it: err says why, kind is the sentinel it matches.
type refusedError struct{ err, kind error }

func (e *refusedError) Error() string   { return e.err.Error() }
func (e *refusedError) Unwrap() []error { return []error{e.err, e.kind} }

// rpcError converts a gRPC error into an *RPCError (context errors pass through).
func rpcError(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded:
		if ctxErr := contextError(st.Code()); ctxErr != nil {
			return fmt.Errorf("%w: %s", ctxErr, st.Message())
		}
	}
	return &RPCError{Code: st.Code(), Message: st.Message(), Err: err}
}

// ErrVersionConflict matches (errors.Is) a [*VersionConflictError].
var ErrVersionConflict = errors.New("meshplane: state version conflict")

// VersionConflictError: a compare-and-set state write found another version than expected;
// nothing changed.
type VersionConflictError struct {
	Namespace string
	Key       string
	Expected  int64
	Message   string
}

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("meshplane: state %s/%s: version conflict (expected version %d): %s",
		e.Namespace, e.Key, e.Expected, e.Message)
}

// Is matches ErrVersionConflict and ErrFailedPrecondition.
func (e *VersionConflictError) Is(target error) bool {
	return target == ErrVersionConflict || target == ErrFailedPrecondition
}

// Sentinels for errors.Is on a [*TaskFailedError] from Client.Wait.
var (
	// ErrTaskFailed matches every task that ended without succeeding.
	ErrTaskFailed = errors.New("meshplane: task did not succeed")
	// ErrTaskCancelled matches a task that ended CANCELLED.
	ErrTaskCancelled = errors.New("meshplane: task cancelled")
	// ErrTaskTimedOut matches a task that ended TIMED_OUT.
	ErrTaskTimedOut = errors.New("meshplane: task timed out")
	// ErrTaskDeadLettered matches a task that ended DEAD_LETTER.
	ErrTaskDeadLettered = errors.New("meshplane: task dead-lettered")
)

// TaskFailedError: a task waited for ended without succeeding. Task is its final record.
type TaskFailedError struct {
	Task *TaskInfo
}

func (e *TaskFailedError) Error() string {
	msg := fmt.Sprintf("meshplane: task %s ended %s", e.Task.ID, e.Task.State)
	if e.Task.Error != nil {
		msg += fmt.Sprintf(": %s: %s", e.Task.Error.Code, e.Task.Error.Message)
	}
	return msg
}

// Is matches ErrTaskFailed, and the sentinel of the task's final state.
func (e *TaskFailedError) Is(target error) bool {
	switch target {
	case ErrTaskFailed:
		return true
	case ErrTaskCancelled:
		return e.Task.State == TaskCancelled
	case ErrTaskTimedOut:
		return e.Task.State == TaskTimedOut
	case ErrTaskDeadLettered:
		return e.Task.State == TaskDeadLetter
	}
	return false
}

// ErrNotRunning: the agent is not running (State or Publish used before Run or after it returned).
var ErrNotRunning = errors.New("meshplane: agent is not running")

package meshplane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type OutOfStock struct{ Item string }

func (e *OutOfStock) Error() string { return "out of stock: " + e.Item }

type coded struct{}

func (coded) Error() string     { return "coded" }
func (coded) ErrorCode() string { return "custom_code" }

func TestOrdinaryErrorsAreRetryableWithTheirTypeName(t *testing.T) {
	_, pathErr := os.Open("/definitely/not/here")
	cases := []struct {
		err  error
		code string
	}{
		{&OutOfStock{"tea"}, "OutOfStock"},
		{fmt.Errorf("order failed: %w", &OutOfStock{"tea"}), "OutOfStock"},
		{pathErr, "PathError"},
		{errors.New("plain"), "Error"},
		{fmt.Errorf("wrapped: %w", errors.New("plain")), "Error"},
		{coded{}, "custom_code"},
		{fmt.Errorf("x: %w", coded{}), "custom_code"},
		{context.Canceled, "Error"},
	}
	for _, c := range cases {
		te := toTaskError(c.err)
		if te.Code != c.code || !te.Retryable || te.Message != c.err.Error() {
			t.Errorf("%v: got %+v, want code %q, retryable, message %q", c.err, te, c.code, c.err.Error())
		}
		if !errors.Is(te, c.err) {
			t.Errorf("%v: the task error does not wrap its cause", c.err)
		}
	}
	var pe *fs.PathError
	if !errors.As(toTaskError(pathErr), &pe) {
		t.Error("errors.As through the task error failed")
	}
}

func TestTaskErrorsKeepTheirCodeAndRetryFlag(t *testing.T) {
	fatal := NonRetryable("Fatal", "fatal")
	if te := toTaskError(fatal); te.Code != "Fatal" || te.Retryable || te.Message != "fatal" {
		t.Fatalf("got %+v", te)
	}
	if te := toTaskError(fmt.Errorf("context: %w", fatal)); te != fatal {
		t.Fatalf("a wrapped *TaskError is reported as it is, got %+v", te)
	}
	if te := toTaskError(Retryable("Busy", "later")); te.Code != "Busy" || !te.Retryable {
		t.Fatalf("got %+v", te)
	}
	if te := toTaskError(&TaskError{Message: "no code"}); te.Code != "Error" || te.Retryable {
		t.Fatalf("an empty code becomes Error, got %+v", te)
	}
	perm := Permanent(&OutOfStock{"tea"})
	if perm.Code != "OutOfStock" || perm.Retryable || perm.Message != "out of stock: tea" {
		t.Fatalf("Permanent: got %+v", perm)
	}
	if Permanent(nil) != nil {
		t.Fatal("Permanent(nil) must be nil")
	}
	if got := fatal.Error(); got != "Fatal: fatal" {
		t.Fatalf("Error(): %q", got)
	}
	d := fatal.WithDetails(map[string]any{"k": 1})
	if d.Details["k"] != 1 || fatal.Details != nil {
		t.Fatal("WithDetails must copy")
	}
}

func TestErrorResultFrames(t *testing.T) {
	r := errorResult(refOf("t1", 2), NonRetryable("Fatal", "fatal").WithDetails(map[string]any{"n": 1, "s": []string{"a"}}))
	if r.GetTaskId() != "t1" || r.GetAttempt() != 2 {
		t.Fatalf("ref not echoed: %v", r)
	}
	e := r.GetError()
	if e.GetCode() != "Fatal" || e.GetMessage() != "fatal" || e.GetRetryable() {
		t.Fatalf("got %v", e)
	}
	if got := e.GetDetails().AsMap()["s"]; fmt.Sprint(got) != "[a]" {
		t.Fatalf("details not carried: %v", e.GetDetails())
	}
	odd := errorResult(refOf("t", 1), &TaskError{Code: "X", Details: map[string]any{"ch": make(chan int)}})
	if odd.GetError().GetDetails() == nil {
		t.Fatal("unencodable details must fall back to their printed form")
	}
}

func TestPanicsBecomeRetryableErrors(t *testing.T) {
	task := &Task{logger: discardLogger()}
	out, err := callHandler(context.Background(), func(context.Context, *Task) (any, error) {
		var m map[string]int
		m["boom"] = 1 // panics
		return nil, nil
	}, task)
	if out != nil {
		t.Fatalf("output %v", out)
	}
	te := toTaskError(err)
	if te.Code != CodePanic || !te.Retryable || te.Details["stack"] == nil {
		t.Fatalf("got %+v", te)
	}
}

func TestRPCErrorsMatchTheirSentinels(t *testing.T) {
	err := rpcError(status.Error(codes.NotFound, "task x not found"))
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("%v", err)
	}
	var rpc *RPCError
	if !errors.As(err, &rpc) || rpc.Code != codes.NotFound || rpc.Message != "task x not found" {
		t.Fatalf("%#v", err)
	}
	if err := rpcError(status.Error(codes.Canceled, "gone")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled calls are context.Canceled: %v", err)
	}
	if rpcError(nil) != nil {
		t.Fatal("nil stays nil")
	}
	conflict := &VersionConflictError{Namespace: "ns", Key: "k", Expected: 0, Message: "exists"}
	if !errors.Is(conflict, ErrVersionConflict) || !errors.Is(conflict, ErrFailedPrecondition) {
		t.Fatal("version conflicts match ErrVersionConflict and ErrFailedPrecondition")
	}
}

func TestStateConflictMapping(t *testing.T) {
	s := &State{namespace: "ns"}
	zero := int64(0)
	err := s.conflict("k", &zero, rpcError(status.Error(codes.FailedPrecondition, "version mismatch")))
	var vc *VersionConflictError
	if !errors.As(err, &vc) || vc.Key != "k" || vc.Expected != 0 {
		t.Fatalf("got %v", err)
	}
	if err := s.conflict("k", nil, rpcError(status.Error(codes.FailedPrecondition, "x"))); errors.Is(err, ErrVersionConflict) {
		t.Fatal("without an expected version it is not a version conflict")
	}
}

func TestTaskFailedErrorMatchesItsState(t *testing.T) {
	cases := map[TaskState]error{
		TaskFailed: nil, TaskCancelled: ErrTaskCancelled, TaskTimedOut: ErrTaskTimedOut, TaskDeadLetter: ErrTaskDeadLettered,
	}
	for state, specific := range cases {
		err := &TaskFailedError{Task: &TaskInfo{ID: "t", State: state, Error: &ErrorInfo{Code: "c", Message: "m"}}}
		if !errors.Is(err, ErrTaskFailed) {
			t.Errorf("%s: does not match ErrTaskFailed", state)
		}
		for _, other := range []error{ErrTaskCancelled, ErrTaskTimedOut, ErrTaskDeadLettered} {
			if errors.Is(err, other) != (other == specific) {
				t.Errorf("%s: errors.Is(%v) wrong", state, other)
			}
		}
	}
}

func TestCancelCause(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(&cancelCause{reason: "cancelled"})
	if !errors.Is(context.Cause(ctx), ErrAttemptCancelled) {
		t.Fatal("the cause matches ErrAttemptCancelled")
	}
	if got := context.Cause(ctx).Error(); got != "meshplane: task attempt cancelled (cancelled)" {
		t.Fatalf("got %q", got)
	}
	withMessage := &cancelCause{reason: "cancelled", message: "operator says stop"}
	if got := withMessage.Error(); got != "meshplane: task attempt cancelled (cancelled): operator says stop" {
		t.Fatalf("got %q", got)
	}
}

func TestInvalidArgumentKeepsTheMessageAndTheCause(t *testing.T) {
	cause := &OutOfStock{"tea"}
	err := invalidArgument(fmt.Errorf("meshplane: bad input: %w", cause))
	if err.Error() != "meshplane: bad input: out of stock: tea" || !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("invalidArgument = %q (matches ErrInvalidArgument: %v)", err, errors.Is(err, ErrInvalidArgument))
	}
	var oos *OutOfStock
	if !errors.As(err, &oos) || oos != cause {
		t.Error("the cause is no longer reachable")
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrFailedPrecondition) {
		t.Error("it matches other sentinels")
	}
	if invalidArgument(nil) != nil || invalidArgument(ErrInvalidArgument) != ErrInvalidArgument {
		t.Error("nil, or an error matching ErrInvalidArgument already, must be returned as it is")
	}
}

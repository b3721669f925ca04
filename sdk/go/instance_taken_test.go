package meshplane

// Another agent registered this agent's instance ID: the plane replaces the session with an
// ALREADY_EXISTS `error` frame on register.instance_id, and the agent stops instead of
// reconnecting (which would replace the other agent in turn, and both would flap for good).
// Against the real plane: tests/conformance (test_instance_id.py).

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

func instanceTakenFrame(fatal bool) *pb.ConnectResponse {
	return &pb.ConnectResponse{Frame: &pb.ConnectResponse_Error{Error: &pb.LinkError{
		Code:    codeAlreadyExists,
		Message: "replaced by a newer session of instance test-1: two agents share this instance_id; give each its own",
		Field:   fieldInstanceID,
		Fatal:   fatal,
	}}}
}

// runEnded waits for Run's error (and leaves nil for the harness's cleanup).
func (h *harness) runEnded() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.done <- nil
		return err
	case <-time.After(waitFor):
		h.t.Fatal("Run did not return")
		return nil
	}
}

func wantInstanceTaken(t *testing.T, err error) {
	t.Helper()
	var taken *InstanceIDTakenError
	if !errors.Is(err, ErrInstanceIDTaken) || !errors.As(err, &taken) || taken.InstanceID != "test-1" {
		t.Fatalf("Run returned %v, want an *InstanceIDTakenError of test-1", err)
	}
	if !strings.Contains(err.Error(), `instance_id "test-1" is taken by another agent: replaced by a newer session`) {
		t.Fatalf("error text: %q", err.Error())
	}
}

func TestAnAgentWhoseInstanceIDAnotherAgentRegisteredStopsInsteadOfReconnecting(t *testing.T) {
	for _, fatal := range []bool{true, false} { // older planes sent the frame with fatal false
		h, run := startAgent(t)
		started := make(chan struct{})
		h.agent.Handle("hold", func(ctx context.Context, _ *Task) (any, error) {
			close(started)
			<-ctx.Done()
			return "late", nil
		})
		run(h.agent)
		s := h.session()
		s.registered()
		s.assign("t1", "hold", `{}`)
		<-started
		// Another error frame (a failed publish) is no reason to stop.
		s.out <- &pb.ConnectResponse{Frame: &pb.ConnectResponse_Error{Error: &pb.LinkError{
			Code: 8, Message: "payload too large", Field: "publish",
		}}}
		s.out <- instanceTakenFrame(fatal)
		s.end <- nil // the plane closes the stream right after the frame

		wantInstanceTaken(t, h.runEnded())
		for frame := range s.frames { // everything the agent wrote on the replaced session
			if results := frame.GetTaskResults().GetResults(); len(results) > 0 {
				t.Fatalf("fatal %v: the stopped agent sent results: %v", fatal, results)
			}
		}
		select {
		case <-h.plane.sessions:
			t.Fatalf("fatal %v: the agent reconnected", fatal)
		default:
		}
	}
}

func TestAnAgentReplacedWhileItRegistersStopsWithInstanceIDTaken(t *testing.T) {
	h, run := startAgent(t)
	run(h.agent)
	s := h.session()
	s.out <- instanceTakenFrame(true) // the first frame: another agent registered the ID meanwhile
	s.end <- nil
	wantInstanceTaken(t, h.runEnded())
}

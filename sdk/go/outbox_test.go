package meshplane

import (
	"fmt"
	"strings"
	"testing"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

func kinds(frames []*pb.ConnectRequest) []string {
	var out []string
	for _, f := range frames {
		switch v := f.GetFrame().(type) {
		case *pb.ConnectRequest_TaskUpdates:
			out = append(out, fmt.Sprintf("updates:%d", len(v.TaskUpdates.GetUpdates())))
		case *pb.ConnectRequest_TaskResults:
			out = append(out, fmt.Sprintf("results:%d", len(v.TaskResults.GetResults())))
		case *pb.ConnectRequest_Heartbeat:
			out = append(out, "heartbeat")
		case *pb.ConnectRequest_Publish:
			out = append(out, "publish:"+v.Publish.GetChannel())
		case *pb.ConnectRequest_Draining:
			out = append(out, "draining")
		default:
			out = append(out, fmt.Sprintf("%T", v))
		}
	}
	return out
}

func okResult(r ref, size int) *pb.TaskResult {
	return &pb.TaskResult{TaskId: r.taskID, Attempt: r.attempt, Outcome: &pb.TaskResult_Output{
		Output: jsonPayload([]byte(`"` + strings.Repeat("x", size) + `"`)),
	}}
}

func TestOutboxCoalescesUpdatesAndResultsIntoFewFrames(t *testing.T) {
	o := newOutbox()
	o.addControl(&pb.ConnectRequest{Frame: &pb.ConnectRequest_Publish{Publish: &pb.ChannelPublish{Channel: "a"}}})
	o.setHeartbeat(&pb.Heartbeat{InFlight: 1})
	o.setHeartbeat(&pb.Heartbeat{InFlight: 2}) // the newest heartbeat wins
	for i := range 10 {
		o.addStarted(refOf(fmt.Sprint("t", i), 1))
	}
	o.addUpdate(&pb.TaskUpdate{TaskId: "t1", Attempt: 1, Kind: pb.TaskUpdateKind_TASK_UPDATE_KIND_PROGRESS, Progress: 0.5})
	for i := range 5 {
		r := refOf(fmt.Sprint("r", i), 1)
		o.addResult(r, okResult(r, 1))
	}
	o.addControl(&pb.ConnectRequest{Frame: &pb.ConnectRequest_Publish{Publish: &pb.ChannelPublish{Channel: "b"}}})

	frames := o.take()
	want := []string{"publish:a", "publish:b", "heartbeat", "updates:11", "results:5"}
	if got := kinds(frames); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if frames[2].GetHeartbeat().GetInFlight() != 2 {
		t.Fatal("the newest heartbeat must win")
	}
	if o.pending() || len(o.take()) != 0 {
		t.Fatal("take must empty the outbox")
	}
	select {
	case <-o.ready:
	default:
		t.Fatal("queueing must wake the writer")
	}
}

func TestOutboxSkipsStartedForAttemptsFinishedInTheSameTake(t *testing.T) {
	o := newOutbox()
	done, running := refOf("done", 1), refOf("running", 1)
	o.addStarted(done)
	o.addStarted(running)
	o.addResult(done, okResult(done, 1))
	frames := o.take()
	if got := kinds(frames); fmt.Sprint(got) != "[updates:1 results:1]" {
		t.Fatalf("got %v", got)
	}
	if u := frames[0].GetTaskUpdates().GetUpdates()[0]; u.GetTaskId() != "running" || u.GetKind() != pb.TaskUpdateKind_TASK_UPDATE_KIND_STARTED {
		t.Fatalf("got %v", u)
	}
}

func TestOutboxSplitsLargeBatches(t *testing.T) {
	o := newOutbox()
	for i := range maxEntriesPerFrame*2 + 3 {
		o.addUpdate(&pb.TaskUpdate{TaskId: fmt.Sprint(i), Attempt: 1, Kind: pb.TaskUpdateKind_TASK_UPDATE_KIND_HEARTBEAT})
	}
	for i := range maxEntriesPerFrame + 1 {
		r := refOf(fmt.Sprint("r", i), 1)
		o.addResult(r, okResult(r, 1))
	}
	got := kinds(o.take())
	want := []string{"updates:256", "updates:256", "updates:3", "results:256", "results:1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}

	// Results are also bounded by bytes: three 1.5 MB outputs need two frames.
	for i := range 3 {
		r := refOf(fmt.Sprint("big", i), 1)
		o.addResult(r, okResult(r, 1536*1024))
	}
	if got := kinds(o.take()); fmt.Sprint(got) != "[results:2 results:1]" {
		t.Fatalf("got %v", got)
	}
	// One result larger than the bound still goes out (alone).
	r := refOf("huge", 1)
	o.addResult(r, okResult(r, 5*1024*1024))
	if got := kinds(o.take()); fmt.Sprint(got) != "[results:1]" {
		t.Fatalf("got %v", got)
	}
}

func TestOutboxKeepsResultOrderAndDeduplicates(t *testing.T) {
	o := newOutbox()
	a, b := refOf("a", 1), refOf("b", 1)
	o.addResult(a, okResult(a, 1))
	o.addResult(b, okResult(b, 1))
	o.discardResult(a)
	o.addResult(a, okResult(a, 2)) // queued again (e.g. resent): once, latest value
	frames := o.take()
	results := frames[0].GetTaskResults().GetResults()
	if len(frames) != 1 || len(results) != 2 || results[0].GetTaskId() != "b" || results[1].GetTaskId() != "a" {
		t.Fatalf("got %v", frames)
	}
}

func TestOutboxClearTaskMessagesKeepsControlFrames(t *testing.T) {
	o := newOutbox()
	r := refOf("a", 1)
	o.addControl(drainingFrame())
	o.setHeartbeat(&pb.Heartbeat{})
	o.addStarted(r)
	o.addUpdate(&pb.TaskUpdate{TaskId: "a", Attempt: 1})
	o.addResult(r, okResult(r, 1))
	o.clearTaskMessages()
	if got := kinds(o.take()); fmt.Sprint(got) != "[draining]" {
		t.Fatalf("got %v", got)
	}
}

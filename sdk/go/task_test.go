package meshplane

import (
	"math"
	"strings"
	"testing"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// runningTask is a task whose attempt runs on a bare runtime: what it reports waits in the outbox.
func runningTask(logs *logBuffer) (*Task, *runtime) {
	h := refOf("t-1", 1)
	rt := &runtime{running: map[ref]*attempt{h: {ref: h}}, outbox: newOutbox()}
	return &Task{ID: h.taskID, Attempt: 1, rt: rt, ref: h, logger: logs.logger()}, rt
}

func queuedUpdates(rt *runtime) []*pb.TaskUpdate {
	rt.outbox.mu.Lock()
	defer rt.outbox.mu.Unlock()
	return rt.outbox.updates
}

func TestProgressReportsFractionsWithinZeroToOne(t *testing.T) {
	logs := &logBuffer{}
	task, rt := runningTask(logs)
	for _, f := range []float64{0, 0.25, 1} {
		task.Progress(f, "step")
	}
	updates := queuedUpdates(rt)
	if len(updates) != 3 {
		t.Fatalf("%d updates queued, want 3", len(updates))
	}
	for i, want := range []float32{0, 0.25, 1} {
		u := updates[i]
		if u.GetKind() != pb.TaskUpdateKind_TASK_UPDATE_KIND_PROGRESS || u.GetProgress() != want || u.GetMessage() != "step" {
			t.Errorf("update %d: %v, want progress %v \"step\"", i, u, want)
		}
	}
	if logs.String() != "" {
		t.Errorf("unexpected log: %s", logs)
	}
}

// The reported bug: Progress(1.5) was reported as 1 and NaN as 0, silently. The Python and
// TypeScript SDKs raise; Progress has no error to return: it reports no progress, warns, and
// still heartbeats.
func TestProgressOutsideZeroToOneIsNotReportedButWarned(t *testing.T) {
	for _, f := range []float64{1.5, -0.1, math.NaN(), math.Inf(1)} {
		logs := &logBuffer{}
		task, rt := runningTask(logs)
		task.Progress(f, "oops")
		updates := queuedUpdates(rt)
		if len(updates) != 1 || updates[0].GetKind() != pb.TaskUpdateKind_TASK_UPDATE_KIND_HEARTBEAT {
			t.Errorf("Progress(%v) queued %v; want only a heartbeat", f, updates)
		}
		if log := logs.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "progress not reported") {
			t.Errorf("Progress(%v) logged %q; want a warning", f, log)
		}
	}
}

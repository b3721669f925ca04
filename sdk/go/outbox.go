package meshplane

import (
	"sync"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// Limits of one coalesced frame. The per-frame cost dominates the link's throughput, so
// queued task updates and results go out as multi-entry frames, within these bounds.
const (
	maxEntriesPerFrame = 256
	maxBytesPerFrame   = 4 * 1024 * 1024
	entryOverhead      = 64
)

// ref identifies one attempt of one task.
type ref struct {
	taskID  string
	attempt int32
}

func refOf(taskID string, attempt int32) ref { return ref{taskID, attempt} }

// outbox holds what waits to be written on the link. The writer takes everything queued at
// once: control frames (publish, draining) in order, then the latest heartbeat, then task
// updates coalesced into frames, then results coalesced into frames.
type outbox struct {
	mu        sync.Mutex
	control   []*pb.ConnectRequest
	heartbeat *pb.Heartbeat
	started   []ref
	updates   []*pb.TaskUpdate
	results   map[ref]*pb.TaskResult
	order     []ref // results in the order they were queued
	ready     chan struct{}
}

func newOutbox() *outbox {
	return &outbox{results: map[ref]*pb.TaskResult{}, ready: make(chan struct{}, 1)}
}

func (o *outbox) wake() {
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

func (o *outbox) addControl(frame *pb.ConnectRequest) {
	o.mu.Lock()
	o.control = append(o.control, frame)
	o.mu.Unlock()
	o.wake()
}

// setHeartbeat queues a heartbeat; a newer one replaces one not sent yet.
func (o *outbox) setHeartbeat(h *pb.Heartbeat) {
	o.mu.Lock()
	o.heartbeat = h
	o.mu.Unlock()
	o.wake()
}

// addStarted queues a STARTED update. It is dropped if the attempt's result goes out in the
// same take: the plane takes a result as "started" too.
func (o *outbox) addStarted(r ref) {
	o.mu.Lock()
	o.started = append(o.started, r)
	o.mu.Unlock()
	o.wake()
}

func (o *outbox) addUpdate(u *pb.TaskUpdate) {
	o.mu.Lock()
	o.updates = append(o.updates, u)
	o.mu.Unlock()
	o.wake()
}

func (o *outbox) addResult(r ref, result *pb.TaskResult) {
	o.mu.Lock()
	if _, ok := o.results[r]; !ok {
		o.order = append(o.order, r)
	}
	o.results[r] = result
	o.mu.Unlock()
	o.wake()
}

func (o *outbox) discardResult(r ref) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.results[r]; !ok {
		return
	}
	delete(o.results, r)
	for i, queued := range o.order {
		if queued == r {
			o.order = append(o.order[:i:i], o.order[i+1:]...)
			break
		}
	}
}

// clearTaskMessages forgets queued updates, results and heartbeats (a new session re-queues
// what it still needs). Control frames (publishes) stay.
func (o *outbox) clearTaskMessages() {
	o.mu.Lock()
	o.heartbeat = nil
	o.started = nil
	o.updates = nil
	o.results = map[ref]*pb.TaskResult{}
	o.order = nil
	o.mu.Unlock()
}

func (o *outbox) pending() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.control) > 0 || o.heartbeat != nil || len(o.started) > 0 || len(o.updates) > 0 || len(o.results) > 0
}

// take returns everything queued, as frames; the outbox is empty afterwards.
func (o *outbox) take() []*pb.ConnectRequest {
	o.mu.Lock()
	frames := o.control
	o.control = nil
	heartbeat := o.heartbeat
	o.heartbeat = nil
	started, updates := o.started, o.updates
	o.started, o.updates = nil, nil
	results := make([]*pb.TaskResult, 0, len(o.order))
	finished := make(map[ref]bool, len(o.order))
	for _, r := range o.order {
		if result, ok := o.results[r]; ok {
			results = append(results, result)
			finished[r] = true
		}
	}
	o.results = map[ref]*pb.TaskResult{}
	o.order = nil
	o.mu.Unlock()

	if heartbeat != nil {
		frames = append(frames, &pb.ConnectRequest{Frame: &pb.ConnectRequest_Heartbeat{Heartbeat: heartbeat}})
	}
	all := make([]*pb.TaskUpdate, 0, len(started)+len(updates))
	for _, r := range started {
		if !finished[r] {
			all = append(all, &pb.TaskUpdate{TaskId: r.taskID, Attempt: r.attempt, Kind: pb.TaskUpdateKind_TASK_UPDATE_KIND_STARTED})
		}
	}
	all = append(all, updates...)
	frames = append(frames, updateFrames(all)...)
	return append(frames, resultFrames(results)...)
}

func updateFrames(updates []*pb.TaskUpdate) []*pb.ConnectRequest {
	var frames []*pb.ConnectRequest
	for start := 0; start < len(updates); start += maxEntriesPerFrame {
		end := min(start+maxEntriesPerFrame, len(updates))
		frames = append(frames, &pb.ConnectRequest{Frame: &pb.ConnectRequest_TaskUpdates{
			TaskUpdates: &pb.TaskUpdates{Updates: updates[start:end]},
		}})
	}
	return frames
}

func resultFrames(results []*pb.TaskResult) []*pb.ConnectRequest {
	var frames []*pb.ConnectRequest
	var chunk []*pb.TaskResult
	size := 0
	flush := func() {
		frames = append(frames, &pb.ConnectRequest{Frame: &pb.ConnectRequest_TaskResults{
			TaskResults: &pb.TaskResults{Results: chunk},
		}})
		chunk, size = nil, 0
	}
	for _, result := range results {
		entry := entryOverhead + len(result.GetOutput().GetData())
		if len(chunk) > 0 && (len(chunk) >= maxEntriesPerFrame || size+entry > maxBytesPerFrame) {
			flush()
		}
		chunk = append(chunk, result)
		size += entry
	}
	if len(chunk) > 0 {
		flush()
	}
	return frames
}

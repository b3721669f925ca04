package server

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	submitMethod      = "/meshplane.v1.TaskService/SubmitTask"
	batchSubmitMethod = "/meshplane.v1.TaskService/BatchSubmitTasks"

	// The wire numbers the coalescer splices (task_service.proto).
	batchRequestsField  protowire.Number = 1 // BatchSubmitTasksRequest.requests
	batchTasksField     protowire.Number = 1 // BatchSubmitTasksResponse.tasks
	batchDedupedField   protowire.Number = 2 // BatchSubmitTasksResponse.deduplicated
	submitTaskField     protowire.Number = 1 // SubmitTaskResponse.task
	submitDedupedField  protowire.Number = 2 // SubmitTaskResponse.deduplicated
	maxBatchSubmitTasks                  = 1000
)

// Headers that differ from request to request without changing what a submit
// does: calls that differ only in these share a batch, which carries none of
// them. Everything else (authorization, traceparent, ...) must be equal.
var perRequestHeaders = []string{"user-agent", "x-request-id", "x-forwarded-for", "x-forwarded-host"}

// perRequestPrefix marks grpc-gateway's copies of a REST request's own HTTP
// headers (grpcgateway-user-agent, grpcgateway-accept, ...), per request too.
const perRequestPrefix = "grpcgateway-"

// batchTimeout bounds a batch call whose callers set no deadline, so a hung
// upstream cannot hold the submit queue forever.
const batchTimeout = 60 * time.Second

// submitCoalescer sends concurrent SubmitTask calls to the control plane as
// BatchSubmitTasks calls. Each batch costs the plane one call, one
// transaction and one round of placement instead of one per task; on a
// plane bound by its per-call CPU that is most of a submit's cost.
//
// At most inFlight batches are out at once; submits arriving meanwhile queue
// and leave together in the next batch, so batches grow with the load and a
// lone caller's submit goes out at once, as a plain SubmitTask.
//
// A batch is atomic on the plane. When the plane refuses one for its content
// (invalid argument, too large, ...), nothing was written, and each of its
// submits is sent again on its own to get its own answer. Any other failure
// (unavailable, deadline) may have written the batch, so every caller in it
// gets that error, as a direct call would.
type submitCoalescer struct {
	grpc.ClientConnInterface // the upstream; every other call passes straight through

	maxBatch      int
	maxBatchBytes int
	slots         chan struct{}
	out           atomic.Int64 // batches (lone submits included) out to the upstream
	metrics       *metrics

	mu     sync.Mutex
	queue  []*queuedSubmit
	closed bool
	ready  chan struct{} // signalled when the queue becomes non-empty

	stop    chan struct{}
	stopped sync.WaitGroup
}

type queuedSubmit struct {
	ctx     context.Context
	key     string      // the metadata that must match within a batch
	md      metadata.MD // outgoing metadata without perRequestHeaders
	request []byte
	queued  time.Time
	done    chan submitAnswer
}

type submitAnswer struct {
	response []byte
	err      error
}

func newSubmitCoalescer(upstream grpc.ClientConnInterface, maxBatch, inFlight, maxBatchBytes int, m *metrics) *submitCoalescer {
	c := &submitCoalescer{
		ClientConnInterface: upstream,
		maxBatch:            min(maxBatch, maxBatchSubmitTasks),
		maxBatchBytes:       maxBatchBytes,
		slots:               make(chan struct{}, inFlight),
		metrics:             m,
		ready:               make(chan struct{}, 1),
		stop:                make(chan struct{}),
	}
	m.watchSubmitQueue(c.queueDepth, func() int { return int(c.out.Load()) })
	c.stopped.Add(1)
	go c.dispatch()
	return c
}

// Close stops dispatching and waits for the batches out to be answered.
// Submits still queued fail with UNAVAILABLE.
func (c *submitCoalescer) Close() {
	close(c.stop)
	c.stopped.Wait()
	c.mu.Lock()
	queued := c.queue
	c.queue = nil
	c.closed = true
	c.mu.Unlock()
	for _, s := range queued {
		s.done <- submitAnswer{err: status.Error(codes.Unavailable, "the gateway is shutting down")}
	}
}

// Invoke queues a SubmitTask for the next batch; any other call goes straight
// to the upstream.
func (c *submitCoalescer) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if method != submitMethod || c.maxBatch <= 1 {
		return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
	}
	request, err := encode(args)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	md = withoutPerRequestHeaders(md)
	s := &queuedSubmit{
		ctx: ctx, key: metadataKey(md), md: md, request: request, queued: time.Now(), done: make(chan submitAnswer, 1),
	}
	if !c.enqueue(s) {
		return status.Error(codes.Unavailable, "the gateway is shutting down")
	}
	select {
	case answer := <-s.done:
		if answer.err != nil {
			return answer.err
		}
		return decode(answer.response, reply)
	case <-ctx.Done():
		// The submit may still be in a batch on its way: as with a direct call
		// cut off by its deadline, the task may or may not have been created.
		return status.FromContextError(ctx.Err()).Err()
	}
}

// enqueue queues s for the next batch, unless the coalescer is closed.
func (c *submitCoalescer) enqueue(s *queuedSubmit) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, s)
	c.mu.Unlock()
	select {
	case c.ready <- struct{}{}:
	default:
	}
	return true
}

// queueDepth is how many submits wait for the next batch (not those whose
// callers gave up: the next batch drops them).
func (c *submitCoalescer) queueDepth() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	waiting := 0
	for _, s := range c.queue {
		if s.ctx.Err() == nil {
			waiting++
		}
	}
	return waiting
}

// dispatch sends a batch whenever a slot is free and submits are queued.
func (c *submitCoalescer) dispatch() {
	defer c.stopped.Done()
	var batches sync.WaitGroup
	defer batches.Wait()
	for {
		select {
		case c.slots <- struct{}{}:
		case <-c.stop:
			return
		}
		batch := c.takeBatch()
		for len(batch) == 0 {
			select {
			case <-c.ready:
				batch = c.takeBatch()
			case <-c.stop:
				return
			}
		}
		batches.Add(1)
		c.out.Add(1)
		go func() {
			defer batches.Done()
			defer func() { <-c.slots }()
			defer c.out.Add(-1)
			c.send(batch)
		}()
	}
}

// takeBatch removes the oldest queued submit and those after it with the same
// metadata, within the batch limits. Submits whose callers gave up are dropped.
func (c *submitCoalescer) takeBatch() []*queuedSubmit {
	c.mu.Lock()
	defer c.mu.Unlock()
	var batch []*queuedSubmit
	size := 0
	kept := c.queue[:0]
	for _, s := range c.queue {
		switch {
		case s.ctx.Err() != nil:
			continue // its caller has its answer (Invoke returned on ctx.Done)
		case len(batch) == 0:
		case len(batch) == c.maxBatch || s.key != batch[0].key || size+len(s.request) > c.maxBatchBytes:
			kept = append(kept, s)
			continue
		}
		batch = append(batch, s)
		size += len(s.request)
	}
	clear(c.queue[len(kept):])
	c.queue = kept
	return batch
}

func (c *submitCoalescer) send(batch []*queuedSubmit) {
	c.metrics.batchLeft(batch)
	if len(batch) == 1 {
		c.sendAlone(batch[0])
		return
	}
	ctx, cancel := batchContext(batch)
	defer cancel()
	var request []byte
	for _, s := range batch {
		request = protowire.AppendTag(request, batchRequestsField, protowire.BytesType)
		request = protowire.AppendBytes(request, s.request)
	}
	response := &rawMessage{}
	err := c.ClientConnInterface.Invoke(ctx, batchSubmitMethod, &rawMessage{data: request}, response, forwardRaw)
	if err != nil {
		if refusedForContent(status.Code(err)) {
			c.metrics.submitBatches.WithLabelValues(batchResent).Inc()
			c.sendEachAlone(batch)
			return
		}
		c.metrics.submitBatches.WithLabelValues(batchFailed).Inc()
		for _, s := range batch {
			s.done <- submitAnswer{err: err}
		}
		return
	}
	answers, err := splitBatchResponse(response.data, len(batch))
	if err != nil {
		c.metrics.submitBatches.WithLabelValues(batchFailed).Inc()
		err = status.Errorf(codes.Internal, "reading the upstream's BatchSubmitTasks response: %v", err)
	} else {
		c.metrics.submitBatches.WithLabelValues(batchAnswered).Inc()
	}
	for i, s := range batch {
		if err != nil {
			s.done <- submitAnswer{err: err}
		} else {
			s.done <- submitAnswer{response: answers[i]}
		}
	}
}

// sendAlone sends one submit as the SubmitTask it came as, under its caller's
// own context (deadline, cancellation, metadata).
func (c *submitCoalescer) sendAlone(s *queuedSubmit) {
	c.metrics.submitsSentAlone.Inc()
	response := &rawMessage{}
	err := c.ClientConnInterface.Invoke(s.ctx, submitMethod, &rawMessage{data: s.request}, response, forwardRaw)
	s.done <- submitAnswer{response: response.data, err: err}
}

func (c *submitCoalescer) sendEachAlone(batch []*queuedSubmit) {
	var wg sync.WaitGroup
	for _, s := range batch {
		wg.Go(func() { c.sendAlone(s) })
	}
	wg.Wait()
}

// refusedForContent reports whether a batch that failed with code was refused
// before anything was written, because of what one of its submits holds.
func refusedForContent(code codes.Code) bool {
	switch code {
	case codes.InvalidArgument, codes.ResourceExhausted, codes.FailedPrecondition, codes.NotFound,
		codes.AlreadyExists, codes.OutOfRange:
		return true
	}
	return false
}

// batchContext carries the batch's shared metadata and the latest of its
// callers' deadlines (batchTimeout from now when one has none): no caller is cut off
// before its own deadline, and each still stops waiting at its own.
func batchContext(batch []*queuedSubmit) (context.Context, context.CancelFunc) {
	ctx := metadata.NewOutgoingContext(context.Background(), batch[0].md)
	var latest time.Time
	for _, s := range batch {
		deadline, ok := s.ctx.Deadline()
		if !ok {
			return context.WithTimeout(ctx, batchTimeout)
		}
		if deadline.After(latest) {
			latest = deadline
		}
	}
	return context.WithDeadline(ctx, latest)
}

// splitBatchResponse cuts a BatchSubmitTasksResponse into n SubmitTaskResponses.
func splitBatchResponse(data []byte, n int) ([][]byte, error) {
	var tasks [][]byte
	var deduplicated []bool
	for len(data) > 0 {
		number, kind, length := protowire.ConsumeTag(data)
		if length < 0 {
			return nil, protowire.ParseError(length)
		}
		data = data[length:]
		switch {
		case number == batchTasksField && kind == protowire.BytesType:
			task, m := protowire.ConsumeBytes(data)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			tasks = append(tasks, task)
			length = m
		case number == batchDedupedField && kind == protowire.BytesType: // packed
			packed, m := protowire.ConsumeBytes(data)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			for len(packed) > 0 {
				v, k := protowire.ConsumeVarint(packed)
				if k < 0 {
					return nil, protowire.ParseError(k)
				}
				deduplicated = append(deduplicated, v != 0)
				packed = packed[k:]
			}
			length = m
		case number == batchDedupedField && kind == protowire.VarintType:
			v, m := protowire.ConsumeVarint(data)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			deduplicated = append(deduplicated, v != 0)
			length = m
		default:
			length = protowire.ConsumeFieldValue(number, kind, data)
			if length < 0 {
				return nil, protowire.ParseError(length)
			}
		}
		data = data[length:]
	}
	if len(tasks) != n || (len(deduplicated) != 0 && len(deduplicated) != n) {
		return nil, fmt.Errorf("%d tasks and %d deduplicated flags for %d submits", len(tasks), len(deduplicated), n)
	}
	answers := make([][]byte, n)
	for i, task := range tasks {
		var answer []byte
		answer = protowire.AppendTag(answer, submitTaskField, protowire.BytesType)
		answer = protowire.AppendBytes(answer, task)
		if len(deduplicated) > 0 && deduplicated[i] {
			answer = protowire.AppendTag(answer, submitDedupedField, protowire.VarintType)
			answer = protowire.AppendVarint(answer, 1)
		}
		answers[i] = answer
	}
	return answers, nil
}

func withoutPerRequestHeaders(md metadata.MD) metadata.MD {
	out := metadata.MD{}
	for k, v := range md {
		if !slices.Contains(perRequestHeaders, k) && !strings.HasPrefix(k, perRequestPrefix) {
			out[k] = v
		}
	}
	return out
}

// metadataKey is md in a canonical form: equal keys, equal metadata.
func metadataKey(md metadata.MD) string {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range md[k] {
			for _, part := range [...]string{k, v} { // length-prefixed: no two metadata share a key
				b.WriteString(strconv.Itoa(len(part)))
				b.WriteByte(':')
				b.WriteString(part)
			}
		}
	}
	return b.String()
}

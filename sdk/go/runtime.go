package meshplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	rtm "runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

const (
	// A session that stayed up this long resets the reconnect backoff.
	stableSession = 5 * time.Second
	// How long a graceful close may wait for the plane to end the stream.
	closeGrace = 5 * time.Second
	// How long a hard stop waits for handlers to return after cancelling them.
	handlerGrace = 5 * time.Second
	// How long leaving waits for the plane to acknowledge the results of the attempts it gave up.
	giveUpAckWait = 2 * time.Second
	// How long the plane may take to answer `register`.
	registerTimeout = 30 * time.Second
	// Longest traceback kept in a panic's error details.
	maxStack = 4000
	// The `error` frame of a session replaced because another agent registered its instance ID
	// (docs/agent-link.md §1): its google.rpc.Code (ALREADY_EXISTS) and field.
	codeAlreadyExists = 6
	fieldInstanceID   = "register.instance_id"
)

type linkStream = grpc.BidiStreamingClient[pb.ConnectRequest, pb.ConnectResponse]

// attempt is one running task attempt.
type attempt struct {
	ref     ref
	task    *Task
	ctx     context.Context
	cancel  context.CancelCauseFunc
	reason  string // why it was cancelled ("" if it was not); guarded by runtime.mu
	message string // the client's reason for cancelling ("" if none); guarded by runtime.mu
	discard bool   // no longer ours (not_held, given up, agent stopping): its result is dropped
}

// session is one registered Connect stream.
type session struct {
	id         string
	cancel     context.CancelFunc
	closeReq   chan struct{}
	closeOnce  sync.Once
	done       chan struct{}
	planeDrain bool // guarded by runtime.mu
}

// requestClose half-closes the stream once the outbox is flushed (the plane then ends it),
// and breaks it if the plane has not ended it within grace.
func (s *session) requestClose(grace time.Duration) {
	s.closeOnce.Do(func() {
		close(s.closeReq)
		timer := time.AfterFunc(grace, s.cancel)
		go func() {
			<-s.done
			timer.Stop()
		}()
	})
}

func (s *session) closing() bool {
	select {
	case <-s.closeReq:
		return true
	default:
		return false
	}
}

// runtime is one Run of an agent: what survives reconnects (running attempts, unacknowledged
// results) and the reconnect loop. Protocol duties (docs/agent-link.md): answer every
// assignment with exactly one result; keep results until acknowledged and resend them after a
// reconnect; list held attempts when registering; cancel handlers on cancellations; finish
// work before leaving on drain or shutdown. An attempt given up because the agent leaves (past
// the drain timeout) is answered too, with the retryable agent_stopped, so that the plane
// re-queues the task at once instead of when the lease runs out.
type runtime struct {
	agent        *Agent
	cfg          *agentConfig
	log          *slog.Logger
	target       string
	conn         *agentConn
	link         pb.AgentLinkServiceClient
	stateClient  pb.StateServiceClient
	capabilities []*pb.Capability
	outbox       *outbox
	inboxes      map[string]*channelInbox // per subscribed channel; fixed once built

	hardCtx         context.Context // cancelled when the agent stops for good (handlers, sessions)
	hardCancel      context.CancelFunc
	handlers        sync.WaitGroup // task handlers
	channelHandlers sync.WaitGroup // channel handler slots (runInbox)

	// What the plane takes at most in a payload, as its last `registered` said (0: not known yet, not
	// checked): a publish or an output over it is refused before it is sent (see limits.go).
	maxPayloadBytes atomic.Int64

	leave     chan struct{} // closed when the agent must leave the reconnect loop
	leaveOnce sync.Once
	stopNow   chan struct{} // closed by Agent.Stop: a drain that gives up at once
	stopOnce  sync.Once
	readyOnce sync.Once

	mu        sync.Mutex
	running   map[ref]*attempt
	abandoned map[ref]*attempt // given up (agent_stopped sent); the handler may still run
	backlog   []*pb.Assignment // assigned beyond max_concurrency (should not happen: the plane gives credits)
	unacked   map[ref]*pb.TaskResult
	changed   chan struct{} // closed and replaced whenever running/backlog/unacked change
	current   *session
	draining  bool
	givingUp  bool // leaving: attempts are answered with agent_stopped, none is started
}

func newRuntime(a *Agent, conn *agentConn, target string, capabilities []*pb.Capability) *runtime {
	hardCtx, hardCancel := context.WithCancel(context.Background())
	r := &runtime{
		agent:        a,
		cfg:          &a.cfg,
		log:          a.cfg.logger.With("agent", a.name, "instance_id", a.cfg.instanceID),
		target:       target,
		conn:         conn,
		link:         pb.NewAgentLinkServiceClient(conn),
		stateClient:  pb.NewStateServiceClient(conn),
		capabilities: capabilities,
		outbox:       newOutbox(),
		inboxes:      map[string]*channelInbox{},
		hardCtx:      hardCtx,
		hardCancel:   hardCancel,
		leave:        make(chan struct{}),
		stopNow:      make(chan struct{}),
		running:      map[ref]*attempt{},
		abandoned:    map[ref]*attempt{},
		unacked:      map[ref]*pb.TaskResult{},
		changed:      make(chan struct{}),
	}
	for _, name := range a.chOrder {
		r.inboxes[name] = &channelInbox{}
	}
	return r
}

// ------------------------------------------------------------------ the reconnect loop

func (r *runtime) run(ctx context.Context) error {
	go func() {
		select {
		case <-ctx.Done():
			r.beginDrain()
		case <-r.leave:
		}
	}()

	bo := newBackoff(r.cfg.backoffInitial, r.cfg.backoffMax)
	var fatal error
	reopened := false // the connection was replaced after the last attempt, which failed before `registered`
	for !r.leaving() {
		started := time.Now()
		registered, err := r.runSession()
		if errors.Is(err, ErrInstanceIDTaken) {
			fatal = err
			r.log.Error("meshplane: another agent registered this instance ID; stopping", "target", r.target, "error", err)
			break
		}
		if isFatal(err) {
			fatal = rpcError(err) // matches ErrUnauthenticated etc., as the client's errors do
			r.log.Error("meshplane: agent cannot connect", "target", r.target, "error", err)
			break
		}
		if r.leaving() {
			break
		}
		if registered && (err == nil || time.Since(started) > stableSession) {
			bo.Reset() // a clean end (drained, plane restarting) or a long session: come back soon
		}
		if registered {
			reopened = false
		} else {
			reopened = r.reconnectAfterFailedRegistration(reopened)
		}
		delay := bo.Next()
		if err == nil {
			r.log.Info("meshplane: link closed; reconnecting", "target", r.target, "delay", delay)
		} else {
			attrs := []any{"target", r.target, "error", err, "delay", delay}
			if !registered {
				if hint := r.cfg.transport.hint(err); hint != "" {
					attrs = append(attrs, "hint", hint)
				}
			}
			r.log.Warn("meshplane: link lost; reconnecting", attrs...)
		}
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-r.leave:
			timer.Stop()
		}
	}
	r.shutdown()
	return fatal
}

// reconnectAfterFailedRegistration: after a session that failed before `registered` (say a
// replica without its database, which cannot store the registration), the next attempt goes over
// a new connection: the next stream on the same HTTP/2 connection would reach the same replica,
// whereas a new one may reach another (behind a load balancer). When it was already a new one
// that failed, the next attempt keeps it: a new connection to a list of addresses may land on the
// failing one again, and on the same connection round_robin sends the next stream to the next
// address. It says whether the connection was replaced.
func (r *runtime) reconnectAfterFailedRegistration(reopened bool) bool {
	if reopened {
		return false
	}
	if err := r.conn.reconnect(); err != nil {
		r.log.Warn("meshplane: cannot open a new connection; retrying on the current one", "target", r.target, "error", err)
		return false
	}
	r.log.Debug("meshplane: the next attempt goes over a new connection", "target", r.target)
	return true
}

func isFatal(err error) bool {
	var reg *RegistrationError
	if errors.As(err, &reg) {
		return true
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented:
		return true
	}
	return false
}

func (r *runtime) leaving() bool {
	select {
	case <-r.leave:
		return true
	default:
		return false
	}
}

func (r *runtime) markLeaving() { r.leaveOnce.Do(func() { close(r.leave) }) }

// runSession runs one stream until it ends; registered says whether it got that far.
func (r *runtime) runSession() (registered bool, err error) {
	ctx, cancel := context.WithCancel(r.hardCtx)
	defer cancel()
	stream, err := r.link.Connect(ctx)
	if err != nil {
		return false, err
	}
	held := r.heldRefs()
	if err := stream.Send(r.registerFrame(held)); err != nil {
		if errors.Is(err, io.EOF) { // the real error comes with Recv
			_, err = stream.Recv()
		}
		return false, err
	}
	// Leaving while the plane has not answered yet (e.g. drained while reconnecting), or a plane
	// that never answers: give up on this stream.
	answered := make(chan struct{})
	go func() {
		timer := time.NewTimer(registerTimeout)
		defer timer.Stop()
		select {
		case <-r.leave:
			cancel()
		case <-timer.C:
			r.log.Warn("meshplane: no answer to `register`; reconnecting", "timeout", registerTimeout)
			cancel()
		case <-answered:
		}
	}()
	first, err := stream.Recv()
	close(answered)
	if err != nil {
		return false, err
	}
	if taken := r.instanceTaken(first); taken != nil { // replaced while it registered
		return false, taken
	}
	if e := first.GetError(); e != nil {
		return false, &RegistrationError{Message: e.GetMessage(), Field: e.GetField()}
	}
	reg := first.GetRegistered()
	if reg == nil {
		return false, fmt.Errorf("meshplane: expected `registered` as the first frame, got %T", first.GetFrame())
	}
	s := &session{id: reg.GetSessionId(), cancel: cancel, closeReq: make(chan struct{}), done: make(chan struct{})}
	r.onRegistered(s, reg, held)

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		r.writeLoop(ctx, stream, s)
	}()
	interval := reg.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		interval = 5 * time.Second
	}
	go r.heartbeatLoop(ctx, interval)
	defer func() {
		cancel()
		<-writerDone
		r.sessionEnded(s)
	}()
	for {
		frame, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return true, err
		}
		if taken := r.instanceTaken(frame); taken != nil {
			return true, taken // the deferred cancel ends the stream: nothing more is written
		}
		r.onFrame(s, frame)
	}
}

// instanceTaken: the plane replaced this session because another agent registered its instance
// ID (this agent's own reconnects abandon the old stream first, so the frame never reaches it for
// them). Reconnecting would replace the other agent in turn, and both would flap for good: the
// session ends with an [*InstanceIDTakenError], which stops the agent. Whether the plane marked the
// frame fatal does not matter (older planes did not). Nil for any other frame.
func (r *runtime) instanceTaken(frame *pb.ConnectResponse) error {
	e := frame.GetError()
	if e == nil || e.GetCode() != codeAlreadyExists || e.GetField() != fieldInstanceID {
		return nil
	}
	return &InstanceIDTakenError{InstanceID: r.cfg.instanceID, Message: e.GetMessage()}
}

func (r *runtime) registerFrame(held []ref) *pb.ConnectRequest {
	refs := make([]*pb.TaskRef, len(held))
	for i, h := range held {
		refs[i] = &pb.TaskRef{TaskId: h.taskID, Attempt: h.attempt}
	}
	host, _ := os.Hostname()
	return &pb.ConnectRequest{Frame: &pb.ConnectRequest_Register{Register: &pb.Register{
		AgentName:      r.agent.name,
		AgentVersion:   r.cfg.version,
		InstanceId:     r.cfg.instanceID,
		Description:    r.cfg.description,
		Capabilities:   r.capabilities,
		Labels:         r.cfg.labels,
		MaxConcurrency: int32(r.cfg.maxConcurrency),
		Sdk:            &pb.SdkInfo{Language: sdkLanguage, Version: Version},
		HeldTasks:      refs,
		Weight:         int32Field(r.cfg.weight),
		Node:           host,
		Pid:            int32(os.Getpid()),
		Subscriptions:  r.agent.chOrder,
	}}}
}

// heldRefs: every attempt still running, queued, or finished without an acknowledged result.
func (r *runtime) heldRefs() []ref {
	r.mu.Lock()
	defer r.mu.Unlock()
	held := make([]ref, 0, len(r.running)+len(r.backlog)+len(r.unacked))
	for h := range r.running {
		held = append(held, h)
	}
	for _, a := range r.backlog {
		held = append(held, refOf(a.GetTaskId(), a.GetAttempt()))
	}
	for h := range r.unacked {
		if _, run := r.running[h]; !run {
			held = append(held, h)
		}
	}
	return held
}

func (r *runtime) onRegistered(s *session, reg *pb.Registered, held []ref) {
	kept := make(map[ref]bool, len(reg.GetKeptTasks()))
	for _, k := range reg.GetKeptTasks() {
		kept[refOf(k.GetTaskId(), k.GetAttempt())] = true
	}
	resend := 0
	r.maxPayloadBytes.Store(reg.GetMaxPayloadBytes())
	r.mu.Lock()
	r.current = s
	r.outbox.clearTaskMessages()
	for _, h := range held {
		if !kept[h] {
			r.forgetLocked(h) // the plane moved on: stop it, drop its result
		}
	}
	for k := range kept {
		if result, ok := r.unacked[k]; ok {
			r.outbox.addResult(k, result)
			resend++
		}
	}
	if r.draining {
		r.outbox.addControl(drainingFrame())
	}
	r.notifyLocked()
	r.mu.Unlock()
	if r.leaving() {
		s.requestClose(closeGrace)
	}
	r.readyOnce.Do(func() { close(r.agent.ready) })
	r.log.Info("meshplane: agent connected", "target", r.target, "session_id", s.id,
		"kept", len(kept), "resent_results", resend)
}

func (r *runtime) sessionEnded(s *session) {
	r.mu.Lock()
	if r.current == s {
		r.current = nil
	}
	r.mu.Unlock()
	close(s.done)
}

func (r *runtime) sessionID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current == nil {
		return ""
	}
	return r.current.id
}

// writeLoop is the stream's only writer: whatever queued up while it was busy goes out together.
func (r *runtime) writeLoop(ctx context.Context, stream linkStream, s *session) {
	for {
		select {
		case <-r.outbox.ready:
		case <-s.closeReq:
		case <-ctx.Done():
			return
		}
		for _, frame := range r.outbox.take() {
			if err := stream.Send(frame); err != nil {
				s.cancel() // the stream broke: the reader sees why
				return
			}
		}
		if s.closing() && !r.outbox.pending() {
			_ = stream.CloseSend()
			return
		}
	}
}

func (r *runtime) heartbeatLoop(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			r.mu.Lock()
			inFlight := len(r.running)
			r.mu.Unlock()
			r.outbox.setHeartbeat(&pb.Heartbeat{
				InFlight:    int32(inFlight),
				Load:        min(1, float64(inFlight)/float64(r.cfg.maxConcurrency)),
				MemoryBytes: memoryBytes(),
			})
		}
	}
}

var memorySample = []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
var memoryMu sync.Mutex

func memoryBytes() int64 {
	memoryMu.Lock()
	defer memoryMu.Unlock()
	metrics.Read(memorySample)
	if memorySample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(memorySample[0].Value.Uint64())
}

// ------------------------------------------------------------------ frames in

func (r *runtime) onFrame(s *session, frame *pb.ConnectResponse) {
	switch f := frame.GetFrame().(type) {
	case *pb.ConnectResponse_Assignments:
		r.assign(f.Assignments.GetAssignments())
	case *pb.ConnectResponse_ResultAcks:
		r.mu.Lock()
		for _, t := range f.ResultAcks.GetTasks() {
			delete(r.unacked, refOf(t.GetTaskId(), t.GetAttempt()))
		}
		r.notifyLocked()
		r.mu.Unlock()
	case *pb.ConnectResponse_Cancellations:
		for _, c := range f.Cancellations.GetCancellations() {
			reason := c.GetReason()
			if reason == "" {
				reason = "cancelled"
			}
			r.cancel(refOf(c.GetTaskId(), c.GetAttempt()), reason, c.GetMessage())
		}
	case *pb.ConnectResponse_ChannelMessage:
		r.deliver(f.ChannelMessage)
	case *pb.ConnectResponse_Drain:
		r.planeDrain(s, f.Drain)
	case *pb.ConnectResponse_Error:
		level := slog.LevelWarn
		if f.Error.GetFatal() {
			level = slog.LevelError
		}
		r.log.Log(context.Background(), level, "meshplane: control plane reports an error",
			"message", f.Error.GetMessage(), "field", f.Error.GetField(), "fatal", f.Error.GetFatal())
	case *pb.ConnectResponse_Registered:
		r.log.Warn("meshplane: unexpected second `registered` frame")
	}
}

// ------------------------------------------------------------------ assignments and results

func (r *runtime) assign(assignments []*pb.Assignment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range assignments {
		h := refOf(a.GetTaskId(), a.GetAttempt())
		if r.knownLocked(h) {
			continue // a duplicate delivery: that attempt has its one result coming already
		}
		handler := r.agent.handlers[a.GetCapability()]
		switch {
		case handler == nil:
			msg := fmt.Sprintf("agent %s has no handler for %q", r.agent.name, a.GetCapability())
			r.resultLocked(h, errorResult(h, &TaskError{Code: CodeUnknownCapability, Message: msg}))
		case r.givingUp: // sent before the plane saw `draining`: not started, handed back at once
			r.resultLocked(h, r.stoppedResult(h))
		case len(r.running) >= r.cfg.maxConcurrency:
			r.backlog = append(r.backlog, a)
		default:
			r.startLocked(a, handler)
		}
	}
	r.notifyLocked()
}

func (r *runtime) knownLocked(h ref) bool {
	if _, ok := r.running[h]; ok {
		return true
	}
	if _, ok := r.unacked[h]; ok {
		return true
	}
	for _, a := range r.backlog {
		if refOf(a.GetTaskId(), a.GetAttempt()) == h {
			return true
		}
	}
	return false
}

func (r *runtime) startLocked(a *pb.Assignment, handler *taskHandler) {
	h := refOf(a.GetTaskId(), a.GetAttempt())
	ctx, cancel := context.WithCancelCause(r.hardCtx)
	stop := func(cause error) { cancel(cause) }
	if a.GetDeadline() != nil {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, a.GetDeadline().AsTime())
		stop = func(cause error) {
			cancel(cause)
			cancelDeadline()
		}
	}
	at := &attempt{ref: h, ctx: ctx, cancel: stop}
	at.task = newTask(r, a, ctx)
	r.running[h] = at
	r.outbox.addStarted(h)
	r.handlers.Add(1)
	go r.execute(at, handler)
}

func (r *runtime) execute(at *attempt, handler *taskHandler) {
	defer r.handlers.Done()
	output, err := callHandler(at.ctx, handler.fn, at.task)
	var payload *pb.Payload
	if err == nil {
		payload, err = r.encodeOutput(output)
	}
	if err != nil && at.ctx.Err() == nil {
		at.task.logger.Warn("meshplane: task failed", "error", err)
	}
	r.finish(at, payload, err)
}

// encodeOutput is what a handler returned as the payload sent, or the non-retryable error the attempt
// fails with: a value that does not encode, or an output over the plane's max_payload_bytes (another
// attempt would return as much; sent, the plane would refuse it, or, over its gRPC message limit, the
// stream would break on every resend).
func (r *runtime) encodeOutput(output any) (*pb.Payload, error) {
	payload, err := encodePayload(output)
	if err != nil {
		return nil, &TaskError{Code: CodeOutputNotEncodable, Message: err.Error(), Err: err}
	}
	if problem := tooLarge("output", len(payload.GetData()), r.maxPayloadBytes.Load()); problem != "" {
		return nil, NonRetryable(CodeOutputTooLarge, problem)
	}
	return payload, nil
}

// callHandler runs a handler, turning a panic into a retryable error.
func callHandler(ctx context.Context, fn HandlerFunc, t *Task) (output any, err error) {
	defer func() {
		if p := recover(); p != nil {
			stack := string(debug.Stack())
			if len(stack) > maxStack {
				stack = stack[:maxStack]
			}
			t.logger.Error("meshplane: task handler panicked", "panic", p, "stack", stack)
			output, err = nil, &TaskError{
				Code: CodePanic, Message: fmt.Sprint(p), Retryable: true,
				Details: map[string]any{"stack": stack},
			}
		}
	}()
	return fn(ctx, t)
}

func (r *runtime) finish(at *attempt, output *pb.Payload, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running[at.ref] == at {
		delete(r.running, at.ref)
	}
	if r.abandoned[at.ref] == at {
		delete(r.abandoned, at.ref)
	}
	reason := at.reason
	if reason == "" && err != nil && errors.Is(at.ctx.Err(), context.DeadlineExceeded) {
		reason = "deadline_exceeded" // the handler gave up because the attempt's deadline passed
	}
	stopping := r.hardCtx.Err() != nil
	at.cancel(nil)
	if at.discard || stopping {
		r.refillLocked()
		r.notifyLocked()
		return
	}
	var result *pb.TaskResult
	switch {
	case reason == "deadline_exceeded":
		result = errorResult(at.ref, Retryable(CodeDeadlineExceeded, "the attempt's deadline passed"))
	case reason != "":
		result = errorResult(at.ref, NonRetryable(CodeCancelled, "cancelled by the control plane ("+reason+")"))
	case err != nil:
		result = errorResult(at.ref, toTaskError(err))
	default:
		result = &pb.TaskResult{TaskId: at.ref.taskID, Attempt: at.ref.attempt, Outcome: &pb.TaskResult_Output{Output: output}}
	}
	r.resultLocked(at.ref, result)
	r.refillLocked()
	r.notifyLocked()
}

func (r *runtime) resultLocked(h ref, result *pb.TaskResult) {
	r.unacked[h] = result
	r.outbox.addResult(h, result)
}

// stoppedResult answers an attempt the agent gives up because it is leaving.
func (r *runtime) stoppedResult(h ref) *pb.TaskResult {
	msg := fmt.Sprintf("agent instance '%s' stopped before the task finished", r.cfg.instanceID)
	return errorResult(h, Retryable(CodeAgentStopped, msg))
}

func errorResult(h ref, e *TaskError) *pb.TaskResult {
	te := &pb.TaskError{Code: e.Code, Message: e.Message, Retryable: e.Retryable}
	if te.Code == "" {
		te.Code = codeFallback
	}
	if len(e.Details) > 0 {
		te.Details = detailsStruct(e.Details)
	}
	return &pb.TaskResult{TaskId: h.taskID, Attempt: h.attempt, Outcome: &pb.TaskResult_Error{Error: te}}
}

func (r *runtime) refillLocked() {
	for len(r.backlog) > 0 && len(r.running) < r.cfg.maxConcurrency {
		a := r.backlog[0]
		r.backlog = r.backlog[1:]
		r.startLocked(a, r.agent.handlers[a.GetCapability()])
	}
}

func (r *runtime) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *runtime) idleLocked() bool {
	return len(r.running) == 0 && len(r.backlog) == 0 && len(r.unacked) == 0
}

// waitIdle waits until nothing runs and every result is acknowledged (true), or until stop
// is closed or the deadline passes (false).
func (r *runtime) waitIdle(deadline time.Time, stop <-chan struct{}) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		r.mu.Lock()
		idle := r.idleLocked()
		changed := r.changed
		r.mu.Unlock()
		if idle {
			return true
		}
		select {
		case <-changed:
		case <-stop:
			return false
		case <-timer.C:
			return false
		}
	}
}

// update queues a task update for a running attempt (dropped once it has finished).
func (r *runtime) update(h ref, u *pb.TaskUpdate) {
	r.mu.Lock()
	_, running := r.running[h]
	r.mu.Unlock()
	if running {
		r.outbox.addUpdate(u)
	}
}

func (r *runtime) cancelReason(h ref) string {
	reason, _ := r.cancellation(h)
	return reason
}

func (r *runtime) cancelMessage(h ref) string {
	_, message := r.cancellation(h)
	return message
}

// cancellation is why a running (or given up) attempt was cancelled: the code and the client's words.
func (r *runtime) cancellation(h ref) (reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if at, ok := r.running[h]; ok {
		return at.reason, at.message
	}
	if at, ok := r.abandoned[h]; ok {
		return at.reason, at.message
	}
	return "", ""
}

// ------------------------------------------------------------------ cancellation

func (r *runtime) cancel(h ref, reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reason == "not_held" {
		r.forgetLocked(h)
		return
	}
	if at, ok := r.running[h]; ok {
		if at.reason == "" {
			at.reason, at.message = reason, message
			if message != "" {
				at.task.logger.Info("meshplane: task cancelled", "reason", reason, "message", message)
			} else {
				at.task.logger.Info("meshplane: task cancelled", "reason", reason)
			}
			at.cancel(&cancelCause{reason: reason, message: message})
		}
		return
	}
	for i, a := range r.backlog {
		if refOf(a.GetTaskId(), a.GetAttempt()) == h {
			r.backlog = append(r.backlog[:i:i], r.backlog[i+1:]...)
			r.resultLocked(h, errorResult(h, NonRetryable(CodeCancelled, "cancelled by the control plane ("+reason+")")))
			r.notifyLocked()
			return
		}
	}
}

// forgetLocked: the plane no longer considers this attempt ours; stop it and drop its result.
func (r *runtime) forgetLocked(h ref) {
	if at, ok := r.running[h]; ok {
		at.discard = true
		if at.reason == "" {
			at.reason = "not_held"
		}
		at.cancel(&cancelCause{reason: "not_held"})
	}
	for i, a := range r.backlog {
		if refOf(a.GetTaskId(), a.GetAttempt()) == h {
			r.backlog = append(r.backlog[:i:i], r.backlog[i+1:]...)
			break
		}
	}
	delete(r.unacked, h)
	r.outbox.discardResult(h)
	r.notifyLocked()
}

// ------------------------------------------------------------------ drain

// beginDrain starts a graceful shutdown: no new work, finish in-flight tasks, deliver their
// results, then leave (bounded by the drain timeout; what still runs then is given up).
func (r *runtime) beginDrain() {
	r.mu.Lock()
	if r.draining {
		r.mu.Unlock()
		return
	}
	r.draining = true
	inFlight := len(r.running) + len(r.backlog)
	if r.current != nil {
		r.outbox.addControl(drainingFrame())
	}
	r.mu.Unlock()
	r.log.Info("meshplane: agent draining", "in_flight", inFlight, "timeout", r.cfg.drainTimeout)
	go func() {
		if !r.waitIdle(time.Now().Add(r.cfg.drainTimeout), r.stopNow) {
			r.mu.Lock()
			running, unacked := len(r.running)+len(r.backlog), len(r.unacked)
			r.giveUpLocked()
			s := r.current
			r.mu.Unlock()
			r.log.Warn("meshplane: drain timeout passed", "running", running, "unacknowledged", unacked)
			if running > 0 {
				r.log.Warn("meshplane: gave up unfinished tasks, reported as failed (agent_stopped) for the plane to re-queue",
					"tasks", running)
				if s != nil { // the results go out now: leave once they are acknowledged (bounded)
					r.waitIdle(time.Now().Add(giveUpAckWait), s.done)
				}
			}
		}
		r.markLeaving()
		r.mu.Lock()
		s := r.current
		r.mu.Unlock()
		if s != nil {
			s.requestClose(closeGrace)
		}
	}()
}

// stop: leave at once, as a drain whose timeout has passed (see Agent.Stop).
func (r *runtime) stop() {
	r.stopOnce.Do(func() { close(r.stopNow) })
	r.beginDrain()
}

// giveUpLocked: leaving with work unfinished. Each running or queued attempt is answered with
// the retryable agent_stopped, so that the plane re-queues its task now (per its retry policy)
// rather than when the lease runs out; the handlers are cancelled and what they still return is
// dropped. Assignments that arrive later are answered the same way.
func (r *runtime) giveUpLocked() {
	r.givingUp = true
	for h, at := range r.running {
		delete(r.running, h)
		r.abandoned[h] = at
		at.discard = true
		if at.reason == "" {
			at.reason = reasonAgentStopped
		}
		at.cancel(&cancelCause{reason: reasonAgentStopped})
		r.resultLocked(h, r.stoppedResult(h))
	}
	for _, a := range r.backlog {
		h := refOf(a.GetTaskId(), a.GetAttempt())
		r.resultLocked(h, r.stoppedResult(h))
	}
	r.backlog = nil
	r.notifyLocked()
}

// planeDrain: the plane asks this session to finish its work, then reconnect (a new session).
func (r *runtime) planeDrain(s *session, d *pb.Drain) {
	r.mu.Lock()
	already := s.planeDrain
	s.planeDrain = true
	inFlight := len(r.running) + len(r.backlog)
	r.mu.Unlock()
	if already {
		return
	}
	timeout := d.GetTimeout().AsDuration()
	if timeout <= 0 {
		timeout = r.cfg.drainTimeout
	}
	r.log.Info("meshplane: control plane asks to drain; finishing work, then reconnecting",
		"reason", d.GetReason(), "in_flight", inFlight, "timeout", timeout)
	go func() {
		r.waitIdle(time.Now().Add(timeout), s.done)
		s.requestClose(closeGrace)
	}()
}

func drainingFrame() *pb.ConnectRequest {
	return &pb.ConnectRequest{Frame: &pb.ConnectRequest_Draining{Draining: &pb.AgentDraining{Reason: "agent shutting down"}}}
}

// shutdown: stop handlers still running (their results are dropped: those not given up are
// re-run by the plane once their lease runs out) and close the connection.
func (r *runtime) shutdown() {
	r.mu.Lock()
	for _, at := range r.running {
		at.discard = true
	}
	r.mu.Unlock()
	r.hardCancel()
	r.markLeaving()
	done := make(chan struct{})
	go func() {
		r.handlers.Wait()
		r.channelHandlers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(handlerGrace):
		r.log.Warn("meshplane: some task or channel handlers ignored cancellation")
	}
	_ = r.conn.Close()
	r.log.Info("meshplane: agent stopped")
}

// ------------------------------------------------------------------ channels

// publish queues a publish, or refuses at once what the plane would refuse (see limits.go).
func (r *runtime) publish(channel string, v any, headers map[string]string) error {
	if err := validChannel(channel); err != nil {
		return err
	}
	if err := validHeaders(headers); err != nil {
		return err
	}
	payload, err := encodePayload(v)
	if err != nil {
		return invalidArgument(err)
	}
	if err := checkJSONDepth(payload); err != nil {
		return err
	}
	if err := checkPayloadSize(payload, r.maxPayloadBytes.Load()); err != nil {
		return err
	}
	r.outbox.addControl(&pb.ConnectRequest{Frame: &pb.ConnectRequest_Publish{Publish: &pb.ChannelPublish{
		Channel: channel, Payload: payload, Headers: headers,
	}}})
	return nil
}

// deliver hands a channel message to a free handler slot, or lets it wait (see inbox.go). It is
// called by the stream's reader only, one message at a time.
func (r *runtime) deliver(m *pb.ChannelMessage) {
	inbox, ok := r.inboxes[m.GetChannel()]
	if !ok {
		return
	}
	msg := message(m)
	start, pushedOut := inbox.add(msg)
	if start {
		r.channelHandlers.Add(1)
		go r.runInbox(m.GetChannel(), r.agent.channels[m.GetChannel()], inbox, msg)
		return
	}
	if pushedOut > 0 && inbox.droppedCount() == uint64(pushedOut) { // the first drop on this channel
		r.log.Warn("meshplane: the handler of a channel is slower than its messages come: the oldest waiting ones are dropped",
			"channel", m.GetChannel())
	}
}

// runInbox is one of a channel's handler slots: it handles m, then whatever waits in the inbox,
// until nothing does. Once the agent stops, what still waits is dropped, not handled.
func (r *runtime) runInbox(name string, fn ChannelHandler, inbox *channelInbox, m *Message) {
	defer r.channelHandlers.Done()
	for ; m != nil; m = inbox.next() {
		if r.hardCtx.Err() != nil {
			continue
		}
		if err := callChannelHandler(r.hardCtx, fn, m); err != nil {
			r.log.Warn("meshplane: channel handler failed", "channel", name, "message_id", m.ID, "error", err)
		}
	}
}

// channelDropped is how many waiting messages of a channel newer ones pushed out (see inbox.go).
func (r *runtime) channelDropped(channel string) uint64 {
	if inbox, ok := r.inboxes[channel]; ok {
		return inbox.droppedCount()
	}
	return 0
}

func callChannelHandler(ctx context.Context, fn ChannelHandler, m *Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			buf := make([]byte, 4096)
			buf = buf[:rtm.Stack(buf, false)]
			err = fmt.Errorf("panic: %v\n%s", p, buf)
		}
	}()
	return fn(ctx, m)
}

func message(m *pb.ChannelMessage) *Message {
	data, ct, err := decodePayload(m.GetPayload())
	if err != nil {
		data, ct = nil, "application/octet-stream"
	}
	return &Message{
		Channel:     m.GetChannel(),
		ID:          m.GetMessageId(),
		Data:        data,
		ContentType: ct,
		Headers:     m.GetHeaders(),
		Publisher:   m.GetPublisher(),
		PublishTime: asTime(m.GetPublishTime()),
	}
}

package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshplane/meshplane/gateway/internal/config"
	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// fakeUpstream is a real gRPC server on a loopback port 0 standing in for the
// control plane: just enough behaviour to exercise the gateway's plumbing.
type fakeUpstream struct {
	addr   string
	health *health.Server

	mu    sync.Mutex
	md    map[string]metadata.MD // incoming metadata by full method name
	peers map[string]int         // calls by the client address (one per connection) they came over
	// calls by the serial number of the client certificate they came with (TLS only)
	clientSerials map[string]int

	streamsEnded atomic.Int64 // server streams whose handler returned

	// watch scripts the "scripted" WatchTask stream: each step is sent (or,
	// if it carries an error, ends the stream with it); closing ends it OK.
	// One step fits in the buffer, so a test can queue the first message
	// before it opens the stream (whose headers wait for that message).
	watch chan watchStep
}

type watchStep struct {
	event *meshplanev1.TaskEvent
	err   error
}

func startUpstream(t *testing.T, opts ...grpc.ServerOption) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{
		health: health.NewServer(),
		md:     map[string]metadata.MD{},
		peers:  map[string]int{},
		watch:  make(chan watchStep, 1),

		clientSerials: map[string]int{},
	}
	srv := grpc.NewServer(append(opts,
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			f.record(ctx, info.FullMethod)
			return handler(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			f.record(ss.Context(), info.FullMethod)
			defer f.streamsEnded.Add(1)
			return handler(srv, ss)
		}),
	)...)
	meshplanev1.RegisterTaskServiceServer(srv, &fakeTasks{f: f})
	meshplanev1.RegisterStateServiceServer(srv, fakeState{})
	meshplanev1.RegisterChannelServiceServer(srv, fakeChannels{})
	meshplanev1.RegisterAgentServiceServer(srv, fakeAgents{})
	healthpb.RegisterHealthServer(srv, f.health)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return f
}

func (f *fakeUpstream) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.md[method] = md.Copy()
	if p, ok := peer.FromContext(ctx); ok {
		f.peers[p.Addr.String()]++
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			f.clientSerials[info.State.PeerCertificates[0].SerialNumber.String()]++
		}
	}
}

// sawClientCertificate reports whether a call came with a client certificate
// of this serial number.
func (f *fakeUpstream) sawClientCertificate(serial int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clientSerials[strconv.FormatInt(serial, 10)] > 0
}

// callsByConnection returns how many calls came over each client connection.
func (f *fakeUpstream) callsByConnection() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var counts []int
	for _, n := range f.peers {
		counts = append(counts, n)
	}
	slices.Sort(counts)
	return counts
}

// metadata returns what the last call of method received.
func (f *fakeUpstream) metadata(method string) metadata.MD {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.md[method]
}

type fakeTasks struct {
	meshplanev1.UnimplementedTaskServiceServer
	f *fakeUpstream
}

func (s *fakeTasks) SubmitTask(_ context.Context, req *meshplanev1.SubmitTaskRequest) (*meshplanev1.SubmitTaskResponse, error) {
	switch req.GetTarget().GetCapability() {
	case "":
		return nil, status.Error(codes.InvalidArgument, "target.capability is required")
	case "plane-violations":
		// The plane's own refusal: BadRequest field paths the proto way, the
		// message their join.
		return nil, planeInvalidArgument("",
			"retry_policy.max_attempts", "must be between 1 and 100 (got 0)",
			"timeouts.start_to_close", "must not be negative (got -1)",
			"metadata['team_id']", "values must be at most 4096 characters",
			"target.label_selector['zone.name']", "keys must be 1-256 characters")
	case "plane-message":
		return nil, planeInvalidArgument("the task was refused (see the details)",
			"retry_policy.max_attempts", "must be between 1 and 100 (got 0)")
	}
	return &meshplanev1.SubmitTaskResponse{Task: &meshplanev1.Task{
		Id:            "t-1",
		Target:        req.GetTarget(),
		Input:         req.GetInput(),
		State:         meshplanev1.TaskState_TASK_STATE_QUEUED,
		CorrelationId: req.GetCorrelationId(),
	}}, nil
}

// planeInvalidArgument is INVALID_ARGUMENT as the control plane makes it: an
// ErrorInfo and a BadRequest with the violations (field, description, …),
// and as message the violations' join unless message is set.
func planeInvalidArgument(message string, fieldsAndDescriptions ...string) error {
	bad := &errdetails.BadRequest{}
	var parts []string
	for i := 0; i+1 < len(fieldsAndDescriptions); i += 2 {
		field, description := fieldsAndDescriptions[i], fieldsAndDescriptions[i+1]
		bad.FieldViolations = append(bad.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: field, Description: description})
		parts = append(parts, field+": "+description)
	}
	if message == "" {
		message = strings.Join(parts, "; ")
	}
	st, err := status.New(codes.InvalidArgument, message).WithDetails(
		&errdetails.ErrorInfo{Reason: "INVALID_ARGUMENT", Domain: "meshplane.dev"}, bad)
	if err != nil {
		return err
	}
	return st.Err()
}

// BatchSubmitTasks refuses a batch with a request whose capability is
// "plane-violations", naming that request's fields as the plane does.
func (s *fakeTasks) BatchSubmitTasks(ctx context.Context, req *meshplanev1.BatchSubmitTasksRequest) (*meshplanev1.BatchSubmitTasksResponse, error) {
	var violations []string
	for i, r := range req.GetRequests() {
		if r.GetTarget().GetCapability() == "plane-violations" {
			at := "requests[" + strconv.Itoa(i) + "]."
			violations = append(violations, at+"target.capability", "capability is unknown",
				at+"retry_policy.initial_backoff", "must not be negative (got -1)")
		}
	}
	if len(violations) > 0 {
		return nil, planeInvalidArgument("", violations...)
	}
	response := &meshplanev1.BatchSubmitTasksResponse{}
	for _, r := range req.GetRequests() {
		submitted, err := s.SubmitTask(ctx, r)
		if err != nil {
			return nil, err
		}
		response.Tasks = append(response.Tasks, submitted.GetTask())
		response.Deduplicated = append(response.Deduplicated, false)
	}
	return response, nil
}

// ListTasks refuses a negative page_size, as the plane does; otherwise it
// lists nothing.
func (s *fakeTasks) ListTasks(_ context.Context, req *meshplanev1.ListTasksRequest) (*meshplanev1.ListTasksResponse, error) {
	if req.GetPageSize() < 0 {
		return nil, planeInvalidArgument("", "page_size", "must not be negative")
	}
	return &meshplanev1.ListTasksResponse{}, nil
}

// unauthenticated is the plane's answer to a call without a valid token.
var unauthenticated = status.Error(codes.Unauthenticated, "missing or invalid bearer token (authorization header)")

func (s *fakeTasks) GetTask(ctx context.Context, req *meshplanev1.GetTaskRequest) (*meshplanev1.GetTaskResponse, error) {
	switch req.GetTaskId() {
	case "missing":
		return nil, status.Error(codes.NotFound, "task missing not found")
	case "boom":
		return nil, status.Error(codes.Internal, "boom")
	case "unauthenticated":
		return nil, unauthenticated
	}
	// Application metadata, which the gateway forwards as Grpc-Metadata-X-Served-By.
	if err := grpc.SetHeader(ctx, metadata.Pairs("x-served-by", "fake")); err != nil {
		return nil, err
	}
	return &meshplanev1.GetTaskResponse{Task: &meshplanev1.Task{Id: req.GetTaskId()}}, nil
}

func (s *fakeTasks) WatchTask(req *meshplanev1.WatchTaskRequest, stream grpc.ServerStreamingServer[meshplanev1.WatchTaskResponse]) error {
	if req.GetAfterSequence() < 0 {
		return planeInvalidArgument("", "after_sequence", "must not be negative")
	}
	switch req.GetTaskId() {
	case "scripted":
	case "unauthenticated":
		return unauthenticated
	default:
		return status.Errorf(codes.NotFound, "task %s not found", req.GetTaskId())
	}
	for {
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case step, ok := <-s.f.watch:
			if !ok {
				return nil
			}
			if step.err != nil {
				return step.err
			}
			if err := stream.Send(&meshplanev1.WatchTaskResponse{Event: step.event}); err != nil {
				return err
			}
		}
	}
}

type fakeState struct {
	meshplanev1.UnimplementedStateServiceServer
}

// PutState stores nothing: version 1 "exists" for every key, so any other
// expected_version is a compare-and-set conflict.
func (fakeState) PutState(_ context.Context, req *meshplanev1.PutStateRequest) (*meshplanev1.PutStateResponse, error) {
	if req.GetKey() == "plain-precondition" {
		return nil, status.Error(codes.FailedPrecondition, "namespace is read-only")
	}
	if req.ExpectedVersion != nil && req.GetExpectedVersion() != 1 {
		st, err := status.New(codes.FailedPrecondition, "version mismatch").WithDetails(&errdetails.PreconditionFailure{
			Violations: []*errdetails.PreconditionFailure_Violation{{
				Type:        versionMismatch,
				Subject:     req.GetNamespace() + "/" + req.GetKey(),
				Description: "expected version does not match stored version 1",
			}},
		})
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	return &meshplanev1.PutStateResponse{Entry: &meshplanev1.StateEntry{
		Namespace: req.GetNamespace(),
		Key:       req.GetKey(),
		Value:     req.GetValue(),
		Version:   2,
	}}, nil
}

type fakeChannels struct {
	meshplanev1.UnimplementedChannelServiceServer
}

func (fakeChannels) Subscribe(req *meshplanev1.SubscribeRequest, stream grpc.ServerStreamingServer[meshplanev1.SubscribeResponse]) error {
	if err := stream.Send(&meshplanev1.SubscribeResponse{Event: &meshplanev1.SubscribeResponse_Started{
		Started: &meshplanev1.SubscriptionStarted{Channel: req.GetChannel()},
	}}); err != nil {
		return err
	}
	return stream.Send(&meshplanev1.SubscribeResponse{Event: &meshplanev1.SubscribeResponse_Message{
		Message: &meshplanev1.ChannelMessage{
			Channel:   req.GetChannel(),
			MessageId: "m-1",
			Payload:   &meshplanev1.Payload{Kind: &meshplanev1.Payload_Json{Json: structpb.NewStringValue("hello")}},
		},
	}})
}

type fakeAgents struct {
	meshplanev1.UnimplementedAgentServiceServer
}

func (fakeAgents) ListAgents(context.Context, *meshplanev1.ListAgentsRequest) (*meshplanev1.ListAgentsResponse, error) {
	return &meshplanev1.ListAgentsResponse{}, nil
}

// testConfig parses args (no environment) with the upstream set to addr.
func testConfig(t *testing.T, addr string, args ...string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(append([]string{"--upstream", addr}, args...), noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func noEnv(string) (string, bool) { return "", false }

// startGateway serves the gateway for upstream addr on a loopback port 0.
func startGateway(t *testing.T, addr string, args ...string) *httptest.Server {
	t.Helper()
	_, ts := startGatewayServer(t, addr, args...)
	return ts
}

// startGatewayServer is startGateway, with the Gateway it serves.
func startGatewayServer(t *testing.T, addr string, args ...string) (*Gateway, *httptest.Server) {
	t.Helper()
	gw, err := New(testConfig(t, addr, args...), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(gw.Handler())
	t.Cleanup(func() {
		ts.Close()
		gw.Close()
	})
	return gw, ts
}

// do sends a request and returns the response with its body read.
func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// batchingPlane stands in for the control plane's two submit calls. The first
// SubmitTask it gets waits for release, so a test can queue submits behind it.
type batchingPlane struct {
	meshplanev1.UnimplementedTaskServiceServer
	release chan struct{}
	failAll error // every BatchSubmitTasks fails with it, when set

	mu      sync.Mutex
	held    bool
	singles []string      // capabilities of the SubmitTask calls, in order
	batches [][]string    // capabilities of each BatchSubmitTasks call
	batchMD []metadata.MD // the metadata of each BatchSubmitTasks call
}

func (p *batchingPlane) task(req *meshplanev1.SubmitTaskRequest) (*meshplanev1.Task, error) {
	if req.GetTarget().GetCapability() == "" {
		st, _ := status.New(codes.InvalidArgument, "target.capability is required").WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "target.capability", Description: "required"}},
		})
		return nil, st.Err()
	}
	return &meshplanev1.Task{Id: "task-for-" + req.GetTarget().GetCapability(), Target: req.GetTarget(), CorrelationId: req.GetCorrelationId()}, nil
}

func (p *batchingPlane) SubmitTask(ctx context.Context, req *meshplanev1.SubmitTaskRequest) (*meshplanev1.SubmitTaskResponse, error) {
	p.mu.Lock()
	first := !p.held
	p.held = true
	p.singles = append(p.singles, req.GetTarget().GetCapability())
	p.mu.Unlock()
	if first {
		<-p.release
	}
	task, err := p.task(req)
	if err != nil {
		return nil, err
	}
	return &meshplanev1.SubmitTaskResponse{Task: task, Deduplicated: req.GetIdempotencyKey() == "seen"}, nil
}

func (p *batchingPlane) BatchSubmitTasks(ctx context.Context, req *meshplanev1.BatchSubmitTasksRequest) (*meshplanev1.BatchSubmitTasksResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var capabilities []string
	for _, r := range req.GetRequests() {
		capabilities = append(capabilities, r.GetTarget().GetCapability())
	}
	p.mu.Lock()
	p.batches = append(p.batches, capabilities)
	p.batchMD = append(p.batchMD, md)
	p.mu.Unlock()
	if p.failAll != nil {
		return nil, p.failAll
	}
	response := &meshplanev1.BatchSubmitTasksResponse{}
	for i, r := range req.GetRequests() {
		task, err := p.task(r)
		if err != nil {
			return nil, status.Errorf(status.Code(err), "requests[%d].%s", i, status.Convert(err).Message())
		}
		response.Tasks = append(response.Tasks, task)
		response.Deduplicated = append(response.Deduplicated, r.GetIdempotencyKey() == "seen")
	}
	return response, nil
}

func (p *batchingPlane) seen() (singles []string, batches [][]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.singles), slices.Clone(p.batches)
}

// serveBatchingPlane serves plane on a loopback port and returns its address.
func serveBatchingPlane(t *testing.T, plane *batchingPlane) string {
	t.Helper()
	srv := grpc.NewServer()
	meshplanev1.RegisterTaskServiceServer(srv, plane)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// startCoalescer serves plane and returns a coalescer in front of it (one
// batch in flight) and a client of the coalescer.
func startCoalescer(t *testing.T, plane *batchingPlane) (*submitCoalescer, meshplanev1.TaskServiceClient) {
	t.Helper()
	conn, err := grpc.NewClient(serveBatchingPlane(t, plane), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := newSubmitCoalescer(conn, 256, 1, maxSubmitBatchBytes, newMetrics())
	t.Cleanup(c.Close)
	return c, meshplanev1.NewTaskServiceClient(c)
}

// waitFor polls done until it holds, failing the test after ten seconds.
func waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !done() {
		select {
		case <-deadline:
			t.Fatalf("gave up waiting for %s", what)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

type submitted struct {
	response *meshplanev1.SubmitTaskResponse
	err      error
}

// submitBehindHeld holds the plane on a first submit, queues one submit per
// capability (each with its context from ctxFor) behind it, releases the
// plane and returns what every queued submit got, in order.
func submitBehindHeld(t *testing.T, c *submitCoalescer, client meshplanev1.TaskServiceClient, plane *batchingPlane,
	capabilities []string, ctxFor func(i int) context.Context, beforeRelease func(),
) []submitted {
	t.Helper()
	first := make(chan error, 1)
	go func() {
		_, err := client.SubmitTask(t.Context(), &meshplanev1.SubmitTaskRequest{Target: &meshplanev1.TaskTarget{Capability: "first"}})
		first <- err
	}()
	waitFor(t, "the first submit to reach the plane", func() bool { s, _ := plane.seen(); return len(s) == 1 })
	results := make([]submitted, len(capabilities))
	var wg sync.WaitGroup
	for i, capability := range capabilities {
		wg.Go(func() {
			key := ""
			if capability == "again" {
				key = "seen"
			}
			response, err := client.SubmitTask(ctxFor(i), &meshplanev1.SubmitTaskRequest{
				Target: &meshplanev1.TaskTarget{Capability: capability}, IdempotencyKey: key,
			})
			results[i] = submitted{response, err}
		})
	}
	waitFor(t, "the submits to queue", func() bool { return c.queueDepth() == len(capabilities) })
	if beforeRelease != nil {
		beforeRelease()
	}
	close(plane.release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("first submit: %v", err)
	}
	return results
}

func background(int) context.Context { return context.Background() }

func TestConcurrentSubmitsLeaveAsOneBatchEachAnsweredItsOwn(t *testing.T) {
	plane := &batchingPlane{release: make(chan struct{})}
	c, client := startCoalescer(t, plane)
	var capabilities []string
	for i := range 20 {
		capabilities = append(capabilities, fmt.Sprintf("c%d", i))
	}
	capabilities = append(capabilities, "again")

	results := submitBehindHeld(t, c, client, plane, capabilities, background, nil)

	for i, r := range results {
		if r.err != nil {
			t.Fatalf("submit %d: %v", i, r.err)
		}
		if got, want := r.response.GetTask().GetId(), "task-for-"+capabilities[i]; got != want {
			t.Errorf("submit %d answered with %s, want %s", i, got, want)
		}
		if got, want := r.response.GetDeduplicated(), capabilities[i] == "again"; got != want {
			t.Errorf("submit %d: deduplicated %v, want %v", i, got, want)
		}
	}
	singles, batches := plane.seen()
	if !slices.Equal(singles, []string{"first"}) || len(batches) != 1 || !sameSet(batches[0], capabilities) {
		t.Errorf("plane saw singles %v and batches %v; want the first alone, then the rest in one batch", singles, batches)
	}
}

func TestBatchRefusedForOneSubmitIsSentAgainSubmitBySubmit(t *testing.T) {
	plane := &batchingPlane{release: make(chan struct{})}
	c, client := startCoalescer(t, plane)

	results := submitBehindHeld(t, c, client, plane, []string{"a", "", "b"}, background, nil)

	if results[0].err != nil || results[2].err != nil {
		t.Fatalf("the valid submits failed: %v, %v", results[0].err, results[2].err)
	}
	st := status.Convert(results[1].err)
	if st.Code() != codes.InvalidArgument || st.Message() != "target.capability is required" {
		t.Fatalf("the invalid submit got %v, want its own INVALID_ARGUMENT", results[1].err)
	}
	if details := st.Details(); len(details) != 1 || details[0].(*errdetails.BadRequest).GetFieldViolations()[0].GetField() != "target.capability" {
		t.Errorf("details lost: %v", details)
	}
	singles, batches := plane.seen()
	slices.Sort(singles[1:])
	if len(batches) != 1 || !slices.Equal(singles, []string{"first", "", "a", "b"}) {
		t.Errorf("plane saw singles %q and batches %q; want the refused batch, then each submit alone", singles, batches)
	}
}

func TestBatchFailingAmbiguouslyIsNotSentAgain(t *testing.T) {
	plane := &batchingPlane{release: make(chan struct{}), failAll: status.Error(codes.Unavailable, "plane went away")}
	c, client := startCoalescer(t, plane)

	results := submitBehindHeld(t, c, client, plane, []string{"a", "b", "c"}, background, nil)

	for i, r := range results {
		if status.Code(r.err) != codes.Unavailable {
			t.Errorf("submit %d got %v, want the batch's UNAVAILABLE", i, r.err)
		}
	}
	if singles, batches := plane.seen(); len(singles) != 1 || len(batches) != 1 {
		t.Errorf("plane saw singles %v and batches %v; a batch that may have been written must not be sent again", singles, batches)
	}
}

func TestSubmitsWithDifferentMetadataNeverShareABatch(t *testing.T) {
	plane := &batchingPlane{release: make(chan struct{})}
	c, client := startCoalescer(t, plane)
	capabilities := []string{"a1", "b1", "a2", "b2", "a3"}
	ctxFor := func(i int) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(),
			"authorization", "Bearer "+capabilities[i][:1], "x-request-id", capabilities[i])
	}

	results := submitBehindHeld(t, c, client, plane, capabilities, ctxFor, nil)

	for i, r := range results {
		if r.err != nil {
			t.Fatalf("submit %d: %v", i, r.err)
		}
	}
	_, batches := plane.seen()
	if len(batches) != 2 {
		t.Fatalf("batches %v; want one per authorization", batches)
	}
	for i, batch := range batches {
		group := batch[0][:1]
		want := "Bearer " + group
		if !slices.Equal(batch, slices.DeleteFunc(slices.Clone(batch), func(c string) bool { return c[:1] != group })) {
			t.Errorf("batch %v mixes authorizations", batch)
		}
		md := plane.batchMD[i]
		if got := md.Get("authorization"); !slices.Equal(got, []string{want}) {
			t.Errorf("batch %d authorization %v, want %s", i, got, want)
		}
		if got := md.Get("x-request-id"); len(got) != 0 {
			t.Errorf("batch %d carries a request's id %v", i, got)
		}
	}
}

func TestSubmitWhoseCallerGaveUpWhileQueuedIsNotSent(t *testing.T) {
	plane := &batchingPlane{release: make(chan struct{})}
	c, client := startCoalescer(t, plane)
	gone, cancel := context.WithCancel(context.Background())
	ctxFor := func(i int) context.Context {
		if i == 1 {
			return gone
		}
		return context.Background()
	}
	gaveUp := func() {
		cancel()
		waitFor(t, "the queue depth to leave out the abandoned submit", func() bool { return c.queueDepth() == 2 })
	}
	results := submitBehindHeld(t, c, client, plane, []string{"a", "b", "c"}, ctxFor, gaveUp)

	if status.Code(results[1].err) != codes.Canceled {
		t.Errorf("the abandoned submit got %v, want CANCELLED", results[1].err)
	}
	if _, batches := plane.seen(); len(batches) != 1 || !sameSet(batches[0], []string{"a", "c"}) {
		t.Errorf("batches %v; want only the submits still awaited", batches)
	}
}

func TestSplitBatchResponseRefusesAMismatch(t *testing.T) {
	if _, err := splitBatchResponse([]byte{0x0a, 0x00}, 2); err == nil {
		t.Error("one task for two submits was accepted")
	}
	if _, err := splitBatchResponse([]byte{0x0a, 0x05}, 1); err == nil {
		t.Error("a truncated response was accepted")
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestRESTSubmitsAreBatchedToo(t *testing.T) {
	plane := &batchingPlane{release: make(chan struct{})}
	gw, ts := startGatewayServer(t, serveBatchingPlane(t, plane))
	post := func(capability string) int {
		body := strings.NewReader(`{"target": {"capability": "` + capability + `"}}`)
		req := newRequest(t, http.MethodPost, ts.URL+"/v1/tasks", body)
		req.Header.Set("User-Agent", "client-"+capability) // differs per request, as do request ids
		resp, _ := do(t, req)
		return resp.StatusCode
	}

	first := make(chan int, 1)
	go func() { first <- post("first") }()
	waitFor(t, "the first submit to reach the plane", func() bool { s, _ := plane.seen(); return len(s) == 1 })
	var wg sync.WaitGroup
	codes := make([]int, 5)
	for i := range codes {
		wg.Go(func() { codes[i] = post(fmt.Sprintf("r%d", i)) })
	}
	waitFor(t, "the submits to queue", func() bool { return gw.submits.queueDepth() == len(codes) })
	close(plane.release)
	wg.Wait()

	if code := <-first; code != http.StatusOK || slices.ContainsFunc(codes, func(c int) bool { return c != http.StatusOK }) {
		t.Fatalf("statuses %d and %v", code, codes)
	}
	if _, batches := plane.seen(); len(batches) != 1 || !sameSet(batches[0], []string{"r0", "r1", "r2", "r3", "r4"}) {
		t.Errorf("batches %v; want the five REST submits in one", batches)
	}
}

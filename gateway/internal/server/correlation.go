package server

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

// maxCorrelationIDLen is the longest correlation id the control plane keeps
// for a call (the audit column's width) and accepts in a task's correlation_id.
const maxCorrelationIDLen = 200

// correlatingTasks is the TaskService client of the REST handlers. A submit
// whose body sets no correlation_id gets the call's correlation id, the one
// the plane records for the call: so a REST client finds its task (and the
// task's audit entries) by the X-Request-Id it sent, or was answered with.
// The plane does the same from a call's metadata, but a coalesced submit's
// batch carries no request id of its own, so the gateway writes each one into
// its request. The gRPC ingress forwards submits unchanged.
type correlatingTasks struct {
	meshplanev1.TaskServiceClient
}

func (c correlatingTasks) SubmitTask(ctx context.Context, in *meshplanev1.SubmitTaskRequest, opts ...grpc.CallOption) (*meshplanev1.SubmitTaskResponse, error) {
	defaultCorrelationID(in, callCorrelationID(ctx))
	return c.TaskServiceClient.SubmitTask(ctx, in, opts...)
}

func (c correlatingTasks) BatchSubmitTasks(ctx context.Context, in *meshplanev1.BatchSubmitTasksRequest, opts ...grpc.CallOption) (*meshplanev1.BatchSubmitTasksResponse, error) {
	id := callCorrelationID(ctx)
	for _, request := range in.GetRequests() {
		defaultCorrelationID(request, id)
	}
	return c.TaskServiceClient.BatchSubmitTasks(ctx, in, opts...)
}

// defaultCorrelationID sets in's correlation_id to id unless the client set one.
func defaultCorrelationID(in *meshplanev1.SubmitTaskRequest, id string) {
	if in.GetCorrelationId() == "" {
		in.CorrelationId = id
	}
}

// callCorrelationID is the correlation id the control plane reads from a
// call's metadata (controlplane/api/context.py): x-correlation-id (sent over
// REST as Grpc-Metadata-X-Correlation-Id), else x-request-id, which
// withRequestID always sets; cut to maxCorrelationIDLen as the plane cuts it.
func callCorrelationID(ctx context.Context) string {
	md, _ := metadata.FromOutgoingContext(ctx)
	for _, key := range []string{"x-correlation-id", "x-request-id"} {
		values := md.Get(key)
		if len(values) == 0 || values[len(values)-1] == "" {
			continue
		}
		id := values[len(values)-1] // the plane keeps a key's last value
		return id[:min(len(id), maxCorrelationIDLen)]
	}
	return ""
}

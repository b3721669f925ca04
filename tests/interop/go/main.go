// Command client is the Go interop agent client: one scripted exchange on
// AgentLinkService.Connect, using the generated Go code in generated/go.
//
// Usage: client HOST:PORT
//
// The script every interop client follows (see tests/interop/test_three_language_exchange.py):
// register → (registered) → heartbeat → (assignments) → task_results → (result_acks) →
// half-close → the stream ends with status OK. The task output echoes what the client
// received, so the test servicer can check that every language decoded it correctly.
// Exits 0 on success; on any protocol surprise prints what went wrong to stderr and exits 1.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/structpb"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

const (
	language       = "go"
	capability     = "interop.echo"
	overallTimeout = 30 * time.Second
)

type stream = grpc.BidiStreamingClient[meshplanev1.ConnectRequest, meshplanev1.ConnectResponse]

// recv reads the next frame and fails unless it is the expected kind.
func recv[T any](s stream, kind string, pick func(*meshplanev1.ConnectResponse) (T, bool)) (T, error) {
	var zero T
	frame, err := s.Recv()
	if errors.Is(err, io.EOF) {
		return zero, fmt.Errorf("stream ended while waiting for %q", kind)
	}
	if err != nil {
		return zero, fmt.Errorf("waiting for %q: %w", kind, err)
	}
	if e := frame.GetError(); e != nil {
		return zero, fmt.Errorf("plane sent error frame while waiting for %q: %s", kind, prototext.Format(e))
	}
	v, ok := pick(frame)
	if !ok {
		return zero, fmt.Errorf("expected a %q frame, got %s", kind, prototext.Format(frame))
	}
	return v, nil
}

func instanceID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return language + "-" + hex.EncodeToString(b)
}

func run(address string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), overallTimeout)
	defer cancel()

	// The target is loopback: never route it through an HTTP proxy from the environment.
	conn, err := grpc.NewClient(address,
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithNoProxy())
	if err != nil {
		return "", fmt.Errorf("dial %s: %w", address, err)
	}
	defer conn.Close()

	s, err := meshplanev1.NewAgentLinkServiceClient(conn).Connect(ctx)
	if err != nil {
		return "", fmt.Errorf("open Connect stream: %w", err)
	}

	schema, err := structpb.NewStruct(map[string]any{"type": "object", "required": []any{"text"}})
	if err != nil {
		return "", err
	}
	host, _ := os.Hostname()
	err = s.Send(&meshplanev1.ConnectRequest{Frame: &meshplanev1.ConnectRequest_Register{Register: &meshplanev1.Register{
		AgentName:    "interop-" + language,
		AgentVersion: "0.1.0",
		InstanceId:   instanceID(),
		Description:  "Meshplane interop test client",
		Capabilities: []*meshplanev1.Capability{
			{Name: capability, Description: "Echoes its input back", InputSchema: schema},
		},
		Labels:         map[string]string{"language": language},
		MaxConcurrency: 4,
		Sdk:            &meshplanev1.SdkInfo{Language: language, Version: "0.1.0"},
		Weight:         1,
		Node:           host,
		Pid:            int32(os.Getpid()),
	}}})
	if err != nil {
		return "", fmt.Errorf("send register: %w", err)
	}

	registered, err := recv(s, "registered", func(f *meshplanev1.ConnectResponse) (*meshplanev1.Registered, bool) {
		return f.GetRegistered(), f.GetRegistered() != nil
	})
	if err != nil {
		return "", err
	}
	if registered.GetSessionId() == "" {
		return "", errors.New("registered.session_id is empty")
	}
	if registered.GetHeartbeatInterval() == nil {
		return "", errors.New("registered.heartbeat_interval is not set")
	}
	err = s.Send(&meshplanev1.ConnectRequest{Frame: &meshplanev1.ConnectRequest_Heartbeat{Heartbeat: &meshplanev1.Heartbeat{
		InFlight: 0, Load: 0.25, MemoryBytes: 5_000_000_000,
	}}})
	if err != nil {
		return "", fmt.Errorf("send heartbeat: %w", err)
	}

	assignments, err := recv(s, "assignments", func(f *meshplanev1.ConnectResponse) (*meshplanev1.Assignments, bool) {
		return f.GetAssignments(), f.GetAssignments() != nil
	})
	if err != nil {
		return "", err
	}
	if n := len(assignments.GetAssignments()); n != 1 {
		return "", fmt.Errorf("expected exactly one assignment, got %d", n)
	}
	a := assignments.GetAssignments()[0]
	if a.GetCapability() != capability {
		return "", fmt.Errorf("assignment for unknown capability %q", a.GetCapability())
	}
	in := a.GetInput()
	if _, ok := in.GetKind().(*meshplanev1.Payload_Data); !ok || in.GetContentType() != "application/json" {
		return "", fmt.Errorf("assignment input is not JSON bytes: %s", prototext.Format(in))
	}
	if a.GetDeadline() == nil {
		return "", errors.New("assignment.deadline is not set")
	}
	var taskInput any
	if err := json.Unmarshal(in.GetData(), &taskInput); err != nil {
		return "", fmt.Errorf("assignment input is not valid JSON: %w", err)
	}
	output, err := json.Marshal(map[string]any{
		"echo":                       taskInput,
		"language":                   language,
		"session_id":                 registered.GetSessionId(),
		"heartbeat_interval_seconds": registered.GetHeartbeatInterval().AsDuration().Seconds(),
		"max_payload_bytes":          registered.GetMaxPayloadBytes(),
		"traceparent":                a.GetTraceparent(),
		"metadata":                   a.GetMetadata(),
	})
	if err != nil {
		return "", err
	}
	err = s.Send(&meshplanev1.ConnectRequest{Frame: &meshplanev1.ConnectRequest_TaskResults{TaskResults: &meshplanev1.TaskResults{
		Results: []*meshplanev1.TaskResult{{
			TaskId:  a.GetTaskId(),
			Attempt: a.GetAttempt(),
			Outcome: &meshplanev1.TaskResult_Output{Output: &meshplanev1.Payload{
				Kind:        &meshplanev1.Payload_Data{Data: output},
				ContentType: "application/json",
			}},
		}},
	}}})
	if err != nil {
		return "", fmt.Errorf("send task_results: %w", err)
	}

	acks, err := recv(s, "result_acks", func(f *meshplanev1.ConnectResponse) (*meshplanev1.ResultAcks, bool) {
		return f.GetResultAcks(), f.GetResultAcks() != nil
	})
	if err != nil {
		return "", err
	}
	if t := acks.GetTasks(); len(t) != 1 || t[0].GetTaskId() != a.GetTaskId() || t[0].GetAttempt() != a.GetAttempt() {
		return "", fmt.Errorf("result_acks do not match the result sent: %s", prototext.Format(acks))
	}
	if err := s.CloseSend(); err != nil {
		return "", fmt.Errorf("close send: %w", err)
	}
	// Recv returns io.EOF only when the stream ended with status OK.
	if extra, err := s.Recv(); err == nil {
		return "", fmt.Errorf("expected the stream to end, got %s", prototext.Format(extra))
	} else if !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("stream ended with %w", err)
	}
	return fmt.Sprintf("task %s attempt %d done on session %s", a.GetTaskId(), a.GetAttempt(), registered.GetSessionId()), nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintf(os.Stderr, "usage: %s HOST:PORT\n", os.Args[0])
		os.Exit(2)
	}
	summary, err := run(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s client: %v\n", language, err)
		os.Exit(1)
	}
	fmt.Printf("%s client: ok: %s\n", language, summary)
}

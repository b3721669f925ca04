package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

type countingPlane struct {
	meshplanev1.UnimplementedTaskServiceServer
	singles, batched atomic.Int64
}

func (p *countingPlane) SubmitTask(context.Context, *meshplanev1.SubmitTaskRequest) (*meshplanev1.SubmitTaskResponse, error) {
	p.singles.Add(1)
	return &meshplanev1.SubmitTaskResponse{Task: &meshplanev1.Task{Id: "t"}}, nil
}

func (p *countingPlane) BatchSubmitTasks(_ context.Context, req *meshplanev1.BatchSubmitTasksRequest) (*meshplanev1.BatchSubmitTasksResponse, error) {
	p.batched.Add(int64(len(req.GetRequests())))
	return &meshplanev1.BatchSubmitTasksResponse{}, nil
}

func serve(t *testing.T) (*countingPlane, string) {
	t.Helper()
	plane := &countingPlane{}
	srv := grpc.NewServer()
	meshplanev1.RegisterTaskServiceServer(srv, plane)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return plane, ln.Addr().String()
}

func TestSinglesAreCountedAndTimedEach(t *testing.T) {
	plane, addr := serve(t)
	var out bytes.Buffer
	if err := run([]string{"--target", addr, "--total", "50", "--callers", "7", "--connections", "3"}, &out); err != nil {
		t.Fatal(err)
	}
	var r result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if plane.singles.Load() != 50 || r.Submitted != 50 || len(r.LatenciesMs) != 50 {
		t.Errorf("plane got %d submits; result %+v", plane.singles.Load(), r)
	}
}

func TestBatchesCoverTheTotal(t *testing.T) {
	plane, addr := serve(t)
	var out bytes.Buffer
	if err := run([]string{"--target", addr, "--mode", "batch", "--total", "300", "--batch", "100", "--callers", "2"}, &out); err != nil {
		t.Fatal(err)
	}
	if plane.batched.Load() != 300 || plane.singles.Load() != 0 {
		t.Errorf("plane got %d batched and %d single submits", plane.batched.Load(), plane.singles.Load())
	}
}

func TestBadFlagsAreRefused(t *testing.T) {
	for _, args := range [][]string{{}, {"--target", "x", "--mode", "stream"}, {"--target", "x", "--callers", "0"}} {
		if err := run(args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--") {
			t.Errorf("%q: %v", args, err)
		}
	}
}
